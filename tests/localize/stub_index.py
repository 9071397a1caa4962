"""A map index and query features made from exact synthetic correspondences: no map, no CNN, no render."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.geometry import inside_image, project_c2w
from crossfire_ns.localize.map_index import MapIndex, ViewCells
from crossfire_ns.localize.matchers import CrossfireMatcher, CrossfireMatcherConfig
from crossfire_ns.localize.patch_alignment import PatchConfig
from crossfire_ns.localize.query_features import QueryFeatures
from crossfire_ns.localize.verify import VerifyConfig
from crossfire_ns.synthetic.cameras import look_at

W, H, D = 96, 72, 16
K = np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]])
IMAGE = np.zeros((H, W, 3), np.uint8)


def scene(seed: int = 0):
    """Points on a box face, seen by two training views and a query between them; a descriptor per point."""
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(-1.5, 1.5, 400), np.full(400, 4.0), rng.uniform(-1.0, 1.0, 400)], 1)
    points[:, 1] += rng.uniform(-0.5, 0.5, 400)  # relief: PnP needs no planar degeneracy
    descriptors = F.normalize(torch.randn(400, D, generator=torch.Generator().manual_seed(seed)), dim=1)
    views = [look_at([-0.3, 0, 0], [0, 4, 0]), look_at([0.3, 0, 0.1], [0, 4, 0])]
    query = look_at([0.05, 0.1, 0.05], [0.1, 4, 0], roll_deg=2.0)
    return points, descriptors, views, query


def stub_index(points, descriptors, views) -> MapIndex:
    """Each view's cells: the points it sees, with their exact pixels."""
    cells = []
    for c2w in views:
        pixels, _, front = project_c2w(points, c2w, K)
        seen = inside_image(pixels, front, W, H) & (pixels[:, 0] > 0) & (pixels[:, 1] > 0)
        cells.append(
            ViewCells(descriptors[seen], torch.from_numpy(points[seen]).float(), torch.from_numpy(pixels[seen]).float())
        )
    n = len(views)
    return MapIndex(np.stack(views), np.repeat(K[None], n, 0), np.tile([W, H], (n, 1)), np.ones(n, int), cells)


def index_of(parts) -> MapIndex:
    """One index from (points, descriptors, view) parts: each view's cells carry their own descriptors."""
    single = [stub_index(p, d, [v]) for p, d, v in parts]
    n = len(parts)
    views = np.stack([v for _, _, v in parts])
    return MapIndex(
        views, np.repeat(K[None], n, 0), np.tile([W, H], (n, 1)), np.ones(n, int), [s.views[0] for s in single]
    )


def query_features(points, descriptors, c2w) -> QueryFeatures:
    """The query's dense feature map: each point's descriptor painted at the pixel it projects to."""
    pixels, _, front = project_c2w(points, c2w, K)
    feature_map = torch.zeros(D, H, W)
    x, y = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
    ok = front & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    feature_map[:, y[ok], x[ok]] = descriptors[torch.from_numpy(np.flatnonzero(ok))].T
    return QueryFeatures(IMAGE, feature_map, torch.zeros(0, D), torch.zeros(0, 2))


class NoRenders:
    """A renderer that fails the test when anything renders."""

    num_renders = 0
    seconds = 0.0

    def render(self, *args, **kwargs):
        self.num_renders += 1
        raise AssertionError("the index path must not render")


class StubMatcher(CrossfireMatcher):
    """The crossfire matcher on a stub index and fixed query features."""

    def __init__(self, config, index, query: QueryFeatures):
        super().__init__(config, model=None, renderer=NoRenders())
        self.stub_index, self.query = index, query
        self.crossfire_map = object()

    def index(self):
        return self.stub_index

    def encode(self, image):
        return QueryFeatures(self.query.image, self.query.feature_map, self.query.features, self.query.pixels)


def stub_config(min_similarity: float = 0.9, **groups) -> CrossfireMatcherConfig:
    """Settings for the stub: strict similarity (exact features), no centre floor (its two cameras are 0.6 apart: no
    scale for it), no patch rounds (no training images); ``groups`` change options of a group, e.g.
    ``verify={"min_confidence": 1.01}``."""
    base = CrossfireMatcherConfig(min_similarity=min_similarity)
    base.verify = VerifyConfig(max_centre_sigma=float("inf"))
    base.patch = PatchConfig(rounds=0)
    for name, options in groups.items():
        setattr(base, name, replace(getattr(base, name), **options))
    return base


def stub_matcher(query: QueryFeatures, **groups) -> StubMatcher:
    """``StubMatcher`` on ``scene()``'s index with ``stub_config(**groups)``."""
    points, descriptors, views, _ = scene()
    return StubMatcher(stub_config(**groups), stub_index(points, descriptors, views), query)
