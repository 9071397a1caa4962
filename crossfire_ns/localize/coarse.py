"""Coarse stage: which map views a query is tried against, and a pose hypothesis from each, with no render.

The query's cells are matched (mutual nearest neighbours) against each retrieved training view's index cells, whose
3D points turn the matches into 2D-3D correspondences for a robust PnP. The views come from the priors: retrieval
ranks training views, and a lone prior (a poses file, the previous frame) is tried through its nearest views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np

from crossfire_ns.localize.map_index import MapIndex
from crossfire_ns.localize.matching import mutual_nearest_neighbours
from crossfire_ns.localize.pnp import PnPResult, PoseSolver
from crossfire_ns.localize.query_features import QueryFeatures


@dataclass
class RetrievalConfig:
    """Which of the retrieved training views the coarse stage tries."""

    top_k: int = 8
    """Retrieved views tried first (a matching and a PnP each, until the early exit)."""
    retry_top_k: int = 16
    """Views tried in all when the first give no confirmed pose (<= top-k: no second pass)."""
    views_per_prior: int = 1
    """Nearest index views tried per retrieved prior."""
    lone_prior_views: int = 3
    """Nearest index views tried for a lone prior (--prior poses or sequential)."""

    @property
    def num_priors(self) -> int:
        """How many retrieved priors the stage may use."""
        return max(self.top_k, self.retry_top_k)


@dataclass
class CoarseConfig:
    """Pose hypotheses from the query's cells against a view's cells."""

    reprojection_threshold_px: float = 4.0
    """PnP inlier threshold in query pixels (loose: cells are coarse)."""
    early_exit_inliers: int = 80
    """Stop trying views once a hypothesis has this many inliers..."""
    early_exit_ratio: float = 0.3
    """...and this share of its view's matches as inliers."""


@dataclass
class RetrievedViews:
    """The training views to try, in order: ``first`` in the first pass, ``further`` only when it is not confirmed."""

    first: List[int]
    further: List[int]


def retrieved_views(index: MapIndex, priors: Sequence[np.ndarray], config: RetrievalConfig) -> RetrievedViews:
    """The index views nearest each prior (4x4 c2w, normalised frame, best first), without repeats."""
    priors = list(priors)[: config.num_priors]
    per_prior = config.views_per_prior if len(priors) > 1 else max(config.views_per_prior, config.lone_prior_views)
    views: List[int] = []
    first = 0
    for number, prior in enumerate(priors):
        for view in index.nearest_views(prior, per_prior):
            if view not in views:
                views.append(view)
        if number < config.top_k:
            first = len(views)
    return RetrievedViews(views[:first], views[first:])


@dataclass
class Hypothesis:
    """A coarse pose from one view's cells."""

    pnp: PnPResult
    num_matches: int
    """Matches between the query's cells and the view's."""
    view: int


@dataclass
class CoarseResult:
    """What the coarse stage found over the views it tried."""

    hypotheses: List[Hypothesis] = field(default_factory=list)
    """Every pose found, in the order tried."""
    tried: List[int] = field(default_factory=list)
    """The views tried (the early exit may leave some of those given untried)."""
    inlier_counts: List[int] = field(default_factory=list)
    """PnP inliers of every view tried, in order (0 where none was found)."""
    reason: str = "no prior given"
    """Why the last view gave no pose."""

    def extended(self, more: "CoarseResult") -> "CoarseResult":
        """Both passes as one: the hypotheses and views of ``self``, then ``more``'s."""
        return CoarseResult(
            self.hypotheses + more.hypotheses, self.tried + more.tried, self.inlier_counts + more.inlier_counts,
            more.reason if more.tried else self.reason,
        )  # fmt: skip


def best_positions(hypotheses: Sequence[Hypothesis], k: int) -> List[int]:
    """Positions of the ``k`` (at least 1) hypotheses with most inliers, best first; a tie keeps the earlier one
    first."""
    return sorted(range(len(hypotheses)), key=lambda i: -hypotheses[i].pnp.num_inliers)[: max(1, k)]


def best_hypotheses(hypotheses: Sequence[Hypothesis], k: int) -> List[Hypothesis]:
    """The ``k`` (at least 1) hypotheses with most inliers (``best_positions``)."""
    return [hypotheses[i] for i in best_positions(hypotheses, k)]


def coarse_hypotheses(
    index: MapIndex,
    query: QueryFeatures,
    K: np.ndarray,
    views: Sequence[int],
    config: CoarseConfig,
    solve: PoseSolver,
    min_similarity: float,
) -> CoarseResult:
    """Match the query's cells against each of ``views``' cells (mutual nearest neighbours above
    ``min_similarity``) and solve PnP with ``solve``; stops early once a hypothesis is clearly good."""
    result = CoarseResult()
    for view in views:
        result.tried.append(view)
        cells = index.views[view]
        # a cell covers the same part of the scene in the query as in the view (queries come at about the
        # training focal length, see api.MapLocalizer.max_side_for)
        cell = max(1, int(round(float(index.cell_px[view]) * K[0, 0] / float(index.Ks[view][0, 0]))))
        descriptors, pixels = query.cells(cell)
        idx_v, idx_q, _ = mutual_nearest_neighbours(cells.descriptors, descriptors, min_similarity)
        idx_v, idx_q = idx_v.cpu(), idx_q.cpu()
        points3d = cells.points[idx_v].numpy().astype(np.float64)
        points2d = pixels[idx_q].numpy().astype(np.float64)
        pnp = solve(points3d, points2d, K, config.reprojection_threshold_px, query.shape)
        result.inlier_counts.append(pnp.num_inliers)
        if not pnp.success:
            result.reason = pnp.message
            continue
        result.hypotheses.append(Hypothesis(pnp, len(points3d), view))
        if pnp.num_inliers >= config.early_exit_inliers and pnp.num_inliers >= config.early_exit_ratio * len(points3d):
            break
    return result
