"""The query as every stage sees it: the scene CNN's dense features, computed once per query.

Untextured regions (a blank wall, the sky) carry no correspondence: their features are zeroed so that they never pass
a similarity threshold (the CNN would otherwise answer there with padding artefacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.localize.patch_alignment import smoothed_grey
from crossfire_ns.texture import MIN_TEXTURE, local_std


def cell_centres(height: int, width: int, stride: float) -> torch.Tensor:
    """(height * width, 2) pixel coordinates (x, y) of the centres of a grid of cells of side ``stride``, row-major
    (pixel centres at +0.5)."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5) * stride


@dataclass
class QueryFeatures:
    """One query's features; pooled cells and grey levels are computed on first use and kept with it."""

    image: np.ndarray
    """(H, W, 3) uint8, undistorted."""
    feature_map: torch.Tensor
    """(D, H, W) unit CNN features per query pixel (bilinear from the CNN's grid), zero where untextured."""
    features: torch.Tensor
    """(h * w, D) the CNN's own cells (zero where untextured), for global matching against renders."""
    pixels: torch.Tensor
    """(h * w, 2) the query pixel at the centre of each of ``features``' cells."""
    _cells: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)
    _greys: Dict[float, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> Tuple[int, ...]:
        """(H, W, 3) of the query image."""
        return self.image.shape

    @property
    def device(self) -> torch.device:
        return self.feature_map.device

    def cells(self, cell_px: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The features pooled to cells of ``cell_px`` query pixels: ((M, D) unit descriptors of the textured cells,
        (M, 2) their centre pixels)."""
        if cell_px not in self._cells:
            height, width = self.feature_map.shape[1:]
            h, w = height // cell_px, width // cell_px
            pooled = F.avg_pool2d(self.feature_map[None, :, : h * cell_px, : w * cell_px], cell_px)[0]
            keep = (pooled.norm(dim=0) > 0.5).reshape(-1)
            descriptors = F.normalize(pooled, dim=0).reshape(pooled.shape[0], -1).T[keep].contiguous()
            self._cells[cell_px] = (descriptors, cell_centres(h, w, float(cell_px))[keep.cpu()])
        return self._cells[cell_px]

    def grey(self, smoothing_px: float) -> torch.Tensor:
        """(H, W) grey levels (0-1) blurred by ``smoothing_px`` (``patch_alignment.smoothed_grey``), as the patch
        rounds compare them."""
        if smoothing_px not in self._greys:
            # a float copy: the image may be a read-only array, which torch.from_numpy warns about
            image = torch.as_tensor(np.asarray(self.image, dtype=np.float32)) / 255.0
            self._greys[smoothing_px] = smoothed_grey(image, smoothing_px)
        return self._greys[smoothing_px]


@torch.no_grad()
def encode_query(model, image: np.ndarray) -> QueryFeatures:
    """Dense CNN features of ``image`` (H, W, 3 uint8) with ``model.encode_images``, untextured pixels zeroed."""
    tensor = torch.from_numpy(np.array(image)).float().div(255.0)[None]
    features = model.encode_images(tensor)[0]  # (D, h, w)
    grey = tensor[0, ..., :3].mean(-1).to(features.device)[None, None]
    textured = F.interpolate(local_std(grey), size=features.shape[-2:], mode="area")[0, 0] > MIN_TEXTURE
    features = features * textured
    stride = image.shape[0] / features.shape[1]
    flat = features.reshape(features.shape[0], -1).T.contiguous()
    full = F.interpolate(features[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    full = F.normalize(full, dim=0) * (full.norm(dim=0, keepdim=True) > 0.5)
    return QueryFeatures(image, full, flat, cell_centres(features.shape[1], features.shape[2], stride))
