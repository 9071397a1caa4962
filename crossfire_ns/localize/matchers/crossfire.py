"""crossfire: the query's dense CNN features against descriptors of the map at the hypothesis.

What the query is matched against (``descriptor_source``): the descriptor field rendered there (the CROSSFIRE
paper), or the CNN's own features of the colour rendered there (on CPU-trained maps the radiance field is learnt
far better than the descriptor field; BENCHMARKS.md). Global matching is mutual nearest neighbours above a
similarity threshold; guided matching searches each rendered pixel's match near where the hypothesis puts it, at
sub-pixel precision. Pixel coordinates follow nerfstudio's convention (pixel centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Type

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.localize.matchers.feature import (
    MIN_ACCUMULATION,
    Correspondences,
    FeatureMatcher,
    FeatureMatcherConfig,
)
from crossfire_ns.localize.matching import guided_matches, mutual_nearest_neighbours
from crossfire_ns.localize.render import RenderedView

DescriptorSource = Literal["field", "rendered-rgb"]

MIN_TEXTURE = 2.0 / 255.0
"""Query pixels whose 5x5 grey-level standard deviation is below this are not matched."""


@dataclass
class CrossfireMatcherConfig(FeatureMatcherConfig):
    """CNN features of the query against the map's descriptors rendered at each hypothesis."""

    _target: Type = field(default_factory=lambda: CrossfireMatcher)
    descriptor_source: DescriptorSource = "rendered-rgb"
    """What the query's CNN features are matched against: field (the descriptor field rendered at the hypothesis,
    as in CROSSFIRE) or rendered-rgb (the CNN's features of the colour rendered there; the better of the two on
    CPU-trained maps, see BENCHMARKS.md)."""
    min_similarity: float = 0.6
    """Cosine-similarity threshold on matches."""
    coarse_guided_radius_px: int = 0
    """>0: the coarse rounds also use guided matching, within this many query pixels (for priors known to be
    close, e.g. --prior poses or sequential); 0: global mutual nearest neighbours (retrieval priors)."""
    fallback_guided_radius_px: int = 16
    """When a coarse round's global matching gives no reliable pose, match the same render again, guided within
    this many query pixels of the hypothesis; 0: no fallback. It rescues close priors but can turn far-off priors
    into confident wrong poses: guided matches agree with whatever pose they were searched around."""
    guided_radius_px: int = 6
    """Refinement rounds search each rendered pixel's match only within this many query pixels of where the
    current estimate puts it (sub-pixel peak); 0: global mutual nearest neighbours."""

    @property
    def renders_descriptors(self) -> bool:
        return self.descriptor_source == "field"


def _cell_centres(height: int, width: int, stride: float) -> torch.Tensor:
    """Pixel coordinates (x, y) of the centres of an (height, width) grid of cells of size ``stride``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5) * stride


class CrossfireMatcher(FeatureMatcher):
    """Matches the query's CNN features against the map's descriptors (see ``CrossfireMatcherConfig``)."""

    config: CrossfireMatcherConfig

    @property
    def coarse_radius_px(self) -> int:  # type: ignore[override]
        return self.config.coarse_guided_radius_px

    @property
    def fallback_radius_px(self) -> int:  # type: ignore[override]
        return self.config.fallback_guided_radius_px

    @property
    def refine_radius_px(self) -> int:  # type: ignore[override]
        return self.config.guided_radius_px

    @torch.no_grad()
    def rendered_descriptors(self, view: RenderedView, query: dict) -> torch.Tensor:
        """(h, w, D) descriptors of the render: the field's, or the CNN's features of the rendered colour.

        The CNN is not scale-invariant, so a render smaller than the query is upsampled to the query's size
        before the CNN sees it (as the query was), and its features are pooled back to the render's pixels."""
        if self.config.descriptor_source == "field":
            return view.descriptor
        size = tuple(view.rgb.shape[:2])
        rgb = view.rgb.clamp(0, 1).permute(2, 0, 1)[None]
        query_size = tuple(query["feature_map"].shape[1:])
        if query_size != size:
            rgb = F.interpolate(rgb, size=query_size, mode="bilinear", align_corners=False)
        features = self.model.encode_images(rgb.permute(0, 2, 3, 1))
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(features[0], dim=0).permute(1, 2, 0)

    @torch.no_grad()
    def prepare_query(self, image: np.ndarray) -> dict:
        """Dense features of the query (H, W, 3 uint8) and the image pixel each feature cell covers."""
        tensor = torch.from_numpy(np.array(image)).float().div(255.0)[None]
        features = self.model.encode_images(tensor)[0]  # (D, h, w)
        # No texture, no correspondence: zero the features of flat regions (a blank image, a white wall), so
        # that they never pass the similarity threshold (the CNN would otherwise answer with padding artefacts).
        grey = tensor[0, ..., :3].mean(-1).to(features.device)[None, None]
        local_std = (
            (
                F.avg_pool2d(grey.square(), 5, 1, 2, count_include_pad=False)
                - F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False).square()
            )
            .clamp(min=0)
            .sqrt()
        )
        textured = F.interpolate(local_std, size=features.shape[-2:], mode="area")[0, 0] > MIN_TEXTURE
        features = features * textured
        stride = image.shape[0] / features.shape[1]
        flat = features.reshape(features.shape[0], -1).T.contiguous()
        full = F.interpolate(features[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        full = F.normalize(full, dim=0) * (full.norm(dim=0, keepdim=True) > 0.5)
        return {
            "features": flat,
            "pixels": _cell_centres(features.shape[1], features.shape[2], stride),
            "feature_map": full,  # (D, H, W): one cell per query pixel, for guided matching
        }

    def match(self, query: dict, view: RenderedView) -> Correspondences:
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1)
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1])[valid], dim=-1)
        points = view.points.reshape(-1, 3)[valid]
        idx_r, idx_q, sim = mutual_nearest_neighbours(
            rendered, query["features"].to(rendered.device), self.config.min_similarity
        )
        return Correspondences(
            points3d=points[idx_r].cpu().numpy().astype(np.float64),
            points2d=query["pixels"][idx_q.cpu()].numpy().astype(np.float64),
            scores=sim.cpu().numpy(),
        )

    def match_near(self, query: dict, view: RenderedView, radius_px: int) -> Correspondences:
        """Each rendered pixel's best match within ``radius_px`` of where it lies in the query (the view is
        rendered at the current estimate with the query's intrinsics, scaled), at sub-pixel precision."""
        feature_map = query["feature_map"]
        height, width = view.depth.shape[:2]
        scale = torch.tensor([feature_map.shape[2] / width, feature_map.shape[1] / height])
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1).cpu()
        expected = (_cell_centres(height, width, 1.0) * scale)[valid]
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1]), dim=-1).cpu()[valid]
        points = view.points.reshape(-1, 3).cpu()[valid]
        index, xy, sim = guided_matches(rendered, expected, feature_map, radius_px, self.config.min_similarity)
        return Correspondences(
            points3d=points[index].numpy().astype(np.float64),
            points2d=xy.numpy().astype(np.float64),
            scores=sim.numpy(),
        )
