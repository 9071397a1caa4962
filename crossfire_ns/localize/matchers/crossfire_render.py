"""crossfire-render: the query's CNN features against the map's descriptors rendered at each hypothesis.

What the query is matched against (``descriptor_source``): the descriptor field rendered there (the CROSSFIRE
paper), or the CNN's own features of the colour rendered there. Global matching is mutual nearest neighbours above a
similarity threshold; guided matching searches each rendered pixel's match near where the hypothesis puts it, at
sub-pixel precision. The default ``crossfire`` method renders nothing per query (the map index) and uses these
renders only for its optional render rounds and render check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Type

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.geometry import scale_intrinsics
from crossfire_ns.localize.matchers.feature import (
    MIN_ACCUMULATION,
    Correspondences,
    FeatureMatcher,
    FeatureMatcherConfig,
)
from crossfire_ns.localize.matching import guided_matches, mutual_nearest_neighbours
from crossfire_ns.localize.query_features import QueryFeatures, cell_centres, encode_query
from crossfire_ns.localize.render import RenderedView
from crossfire_ns.localize.verify import shift_contrast

DescriptorSource = Literal["field", "rendered-rgb"]


@dataclass
class CrossfireRenderMatcherConfig(FeatureMatcherConfig):
    """CNN features of the query against the map's descriptors rendered at each hypothesis."""

    _target: Type = field(default_factory=lambda: CrossfireRenderMatcher)
    descriptor_source: DescriptorSource = "rendered-rgb"
    """What the query's CNN features are matched against: field (the descriptor field rendered at the hypothesis,
    as in CROSSFIRE) or rendered-rgb (the CNN's features of the colour rendered there)."""
    min_similarity: float = 0.6
    """Cosine-similarity threshold on matches."""
    coarse_guided_radius_px: int = 0
    """>0: the coarse rounds also use guided matching, within this many query pixels (for priors known to be
    close); 0: global mutual nearest neighbours."""
    fallback_guided_radius_px: int = 16
    """When a coarse round's global matching gives no reliable pose, match the same render again, guided within
    this many query pixels of the hypothesis; 0: no fallback (guided matches agree with whatever pose they were
    searched around)."""
    guided_radius_px: int = 6
    """Refinement rounds search each rendered pixel's match within this many query pixels of where the current
    estimate puts it (sub-pixel peak); 0: global mutual nearest neighbours."""

    @property
    def renders_descriptors(self) -> bool:
        return self.descriptor_source == "field"


class CrossfireRenderMatcher(FeatureMatcher):
    """Matches the query's CNN features against renders (see ``CrossfireRenderMatcherConfig``)."""

    config: CrossfireRenderMatcherConfig

    @property
    def coarse_radius_px(self) -> int:  # type: ignore[override]
        return self.config.coarse_guided_radius_px

    @property
    def fallback_radius_px(self) -> int:  # type: ignore[override]
        return self.config.fallback_guided_radius_px

    @property
    def refine_radius_px(self) -> int:  # type: ignore[override]
        return self.config.guided_radius_px

    def prepare_query(self, image: np.ndarray) -> QueryFeatures:
        return encode_query(self.model, image)

    @torch.no_grad()
    def rendered_descriptors(self, view: RenderedView, query: QueryFeatures) -> torch.Tensor:
        """(h, w, D) descriptors of the render: the field's, or the CNN's features of the rendered colour.

        The CNN is not scale-invariant, so a render smaller than the query is upsampled to the query's size
        before the CNN sees it (as the query was), and its features are pooled back to the render's pixels."""
        if self.config.descriptor_source == "field":
            return view.descriptor
        size = tuple(view.rgb.shape[:2])
        rgb = view.rgb.clamp(0, 1).permute(2, 0, 1)[None]
        query_size = tuple(query.feature_map.shape[1:])
        if query_size != size:
            rgb = F.interpolate(rgb, size=query_size, mode="bilinear", align_corners=False)
        features = self.model.encode_images(rgb.permute(0, 2, 3, 1))
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(features[0], dim=0).permute(1, 2, 0)

    def match(self, query: QueryFeatures, view: RenderedView) -> Correspondences:
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1)
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1])[valid], dim=-1)
        points = view.points.reshape(-1, 3)[valid]
        idx_r, idx_q, sim = mutual_nearest_neighbours(
            rendered, query.features.to(rendered.device), self.config.min_similarity
        )
        return Correspondences(
            points3d=points[idx_r].cpu().numpy().astype(np.float64),
            points2d=query.pixels[idx_q.cpu()].numpy().astype(np.float64),
            scores=sim.cpu().numpy(),
        )

    def match_near(self, query: QueryFeatures, view: RenderedView, radius_px: int) -> Correspondences:
        """Each rendered pixel's best match within ``radius_px`` of where it lies in the query (the view is
        rendered at the current estimate with the query's intrinsics, scaled), at sub-pixel precision."""
        feature_map = query.feature_map
        height, width = view.depth.shape[:2]
        scale = torch.tensor([feature_map.shape[2] / width, feature_map.shape[1] / height])
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1).cpu()
        expected = (cell_centres(height, width, 1.0) * scale)[valid]
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1]), dim=-1).cpu()[valid]
        points = view.points.reshape(-1, 3).cpu()[valid]
        index, xy, sim = guided_matches(rendered, expected, feature_map, radius_px, self.config.min_similarity)
        return Correspondences(
            points3d=points[index].numpy().astype(np.float64),
            points2d=xy.numpy().astype(np.float64),
            scores=sim.numpy(),
        )

    @torch.no_grad()
    def render_agreement(self, query: QueryFeatures, K: np.ndarray, c2w: np.ndarray, width: int) -> dict:
        """The query's CNN features against those of the map's colour rendered at ``c2w`` (``width`` wide at most):
        ``render_agreement`` (the share of textured, covered pixels whose features match above ``min_similarity``),
        ``render_similarity`` (their median similarity) and ``render_contrast`` (``verify.shift_contrast``)."""
        height_q, width_q = query.shape[:2]
        width = min(width, width_q)
        height = max(1, round(height_q * width / width_q))
        view = self.renderer.render(c2w, scale_intrinsics(K, width / width_q, height / height_q), width, height)
        rendered = self.rendered_descriptors(view, query).permute(2, 0, 1).cpu()  # (D, h, w)
        pooled = F.interpolate(query.feature_map[None].cpu(), size=(height, width), mode="area")[0]
        textured = pooled.norm(dim=0) > 0.5
        covered = view.accumulation[..., 0].cpu() > MIN_ACCUMULATION
        valid = textured & covered
        if not bool(valid.any()):
            return {"render_agreement": 0.0, "render_similarity": 0.0}
        query_n, rendered_n = F.normalize(pooled, dim=0), F.normalize(rendered, dim=0)
        similarity = (query_n * rendered_n).sum(0)[valid]
        aligned = float(similarity.median())
        return {
            "render_agreement": float((similarity >= self.config.min_similarity).float().mean()),
            "render_similarity": aligned,
            "render_contrast": shift_contrast(query_n, rendered_n, valid, aligned, max(1, round(width / 20))),
        }
