"""Coarse priors for a query: retrieval of training views, a poses file, or the previous estimate.

Two scores rank the training views: ``matches`` counts mutual-nearest-neighbour matches between the
query's dense CNN features and each training view's (it uses where things are, not only what is there);
``gem`` compares GeM-pooled global descriptors (cheaper, weaker). Both are only as lighting-invariant as the
CNN. Priors from a poses file or from the previous estimate are plain lookups (``api.MapLocalizer``)."""

from __future__ import annotations

from typing import List, Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from crossfire_ns.localize.matching import global_descriptor, mutual_nearest_neighbours

RetrievalScore = Literal["matches", "gem"]
PriorKind = Literal["retrieval", "poses", "sequential"]


class RetrievalIndex:
    """CNN features of every training view at a small resolution, with the views' normalised poses."""

    def __init__(
        self,
        model,
        images: List[torch.Tensor],
        c2ws: np.ndarray,
        max_side: int = 160,
        score: RetrievalScore = "matches",
        max_cells: int = 1200,
        min_similarity: float = 0.6,
    ) -> None:
        self.model = model
        self.max_side = max_side
        self.score = score
        self.min_similarity = min_similarity
        self.max_cells = max_cells
        self.c2ws = c2ws
        features = [self.describe(img) for img in track(images, description="Indexing training views", transient=True)]
        self.global_descriptors = torch.stack([global_descriptor(f[None])[0] for f in features])
        device = getattr(model, "device", "cpu")
        self.cell_features = [_cells(f).to(device) for f in features]
        """Per view, (cells, D) on the map's device: flattened once here, not for every query."""

    @torch.no_grad()
    def describe(self, image: torch.Tensor) -> torch.Tensor:
        """Dense (D, h, w) features of an (H, W, 3) float image in [0, 1].

        The CNN sees the image at (up to ``max_side``) its own scale, which is the scale it was trained at;
        the feature map, not the image, is then pooled down to at most ``max_cells`` cells for matching."""
        chw = image[..., :3].permute(2, 0, 1)[None].float()
        scale = self.max_side / max(chw.shape[-2:])
        if scale < 1:
            chw = F.interpolate(chw, scale_factor=scale, mode="area")
        features = self.model.encode_images(chw.permute(0, 2, 3, 1))
        pool = 1
        while features.shape[-2] * features.shape[-1] / pool**2 > self.max_cells:
            pool += 1
        if pool > 1:
            features = F.normalize(F.avg_pool2d(features, pool, ceil_mode=True), dim=1)
        return features[0].cpu()

    def scores(self, image: np.ndarray) -> torch.Tensor:
        """(N,) similarity of the query (H, W, 3 uint8) to each training view; higher is more alike."""
        features = self.describe(torch.from_numpy(np.array(image)).float().div(255.0))
        if self.score == "gem":
            return (self.global_descriptors @ global_descriptor(features[None])[0]).float()
        query = _cells(features).to(self.cell_features[0].device if self.cell_features else "cpu")
        counts = [len(mutual_nearest_neighbours(query, f, self.min_similarity)[0]) for f in self.cell_features]
        return torch.tensor(counts, dtype=torch.float32)

    def query(self, image: np.ndarray, k: int) -> List[np.ndarray]:
        """Poses (normalised frame, 4x4) of the k training views most similar to the query, best first."""
        order = torch.argsort(self.scores(image), descending=True, stable=True)[:k]
        return [self.c2ws[int(i)] for i in order]


def _cells(features: torch.Tensor) -> torch.Tensor:
    """(D, h, w) feature map -> (h * w, D) rows for matching."""
    return features.reshape(features.shape[0], -1).T.contiguous()


def retrieval_index(
    crossfire_map, score: RetrievalScore = "matches", min_similarity: float = 0.6, extra_views=None
) -> RetrievalIndex:
    """The map's retrieval index, built once per map and settings (it holds the CNN features of every view).

    ``extra_views``: (images (H, W, 3) uint8, poses (M, 4, 4) normalised frame) ranked beside the training views (the
    map index's virtual views, ``Matcher.extra_retrieval_views``)."""
    key = ("retrieval_index", score, float(min_similarity), 0 if extra_views is None else len(extra_views[0]))

    def build() -> RetrievalIndex:
        images, c2ws = crossfire_map.training_images(), np.asarray(crossfire_map.train_c2w)
        if extra_views is not None and len(extra_views[0]):
            extra_images, extra_c2ws = extra_views
            images = images + [torch.as_tensor(image).float().div(255.0) for image in extra_images]
            c2ws = np.concatenate([c2ws, np.asarray(extra_c2ws)])
        return RetrievalIndex(crossfire_map.model, images, c2ws, score=score, min_similarity=min_similarity)

    # built once per map and settings: nothing of the map is read on a cached call (one per query)
    return crossfire_map.cached(key, build)
