"""Coarse priors for a query by retrieval of training views with a global descriptor.

(Priors from a poses file or from the previous estimate are plain lookups, done in ``run``.)"""

from __future__ import annotations

from typing import List

import numpy as np
import torch
from rich.progress import track

from crossfire_ns.localize.matching import global_descriptor, top_k_retrieval


class RetrievalIndex:
    """Global descriptors (GeM-pooled CNN features) of every training view, with their normalised poses."""

    def __init__(self, model, images: List[torch.Tensor], c2ws: np.ndarray, max_side: int = 160) -> None:
        self.model = model
        self.max_side = max_side
        self.c2ws = c2ws
        descriptors = [
            self.describe(img) for img in track(images, description="Indexing training views", transient=True)
        ]
        self.descriptors = torch.stack(descriptors)

    @torch.no_grad()
    def describe(self, image: torch.Tensor) -> torch.Tensor:
        """Global descriptor of an (H, W, 3) float image in [0, 1], at a bounded resolution."""
        chw = image[..., :3].permute(2, 0, 1)[None].float()
        scale = self.max_side / max(chw.shape[-2:])
        if scale < 1:
            chw = torch.nn.functional.interpolate(chw, scale_factor=scale, mode="area")
        features = self.model.encode_images(chw.permute(0, 2, 3, 1))
        return global_descriptor(features)[0].cpu()

    def query(self, image: np.ndarray, k: int) -> List[np.ndarray]:
        """Poses (normalised frame, 4x4) of the k training views most similar to the query."""
        descriptor = self.describe(torch.from_numpy(np.array(image)).float().div(255.0))
        indices, _ = top_k_retrieval(descriptor, self.descriptors, k)
        return [self.c2ws[int(i)] for i in indices]
