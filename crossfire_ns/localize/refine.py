"""Refinement stage: the coarse hypotheses refined against the index cells of the views that see what the query sees.

A round projects those views' cells into the query at the current estimate, searches each cell's match within a
radius of where it lands (sub-pixel, guided) and re-solves the pose. The best few coarse hypotheses get one round each
(a trial), and the one whose round keeps most inliers is refined through the remaining radii: a wrong hypothesis can
win the coarse count on few, coarse cells, and rarely wins the refined one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional, Tuple

import numpy as np
import torch

from crossfire_ns.geometry import (
    inside_image,
    opencv_w2c_to_opengl_c2w,
    project_c2w,
    project_points,
    rotation_angle_deg,
)
from crossfire_ns.localize.coarse import Hypothesis
from crossfire_ns.localize.map_index import MapIndex, ViewCells
from crossfire_ns.localize.matching import guided_matches, two_level_guided_matches
from crossfire_ns.localize.pnp import PnPResult, PoseSolver, camera_centre_sigma
from crossfire_ns.localize.query_features import QueryFeatures

ViewChoice = Literal["overlap", "covisible", "nearest"]


@dataclass
class RefineConfig:
    """Guided refinement rounds against the index cells at the current estimate."""

    hypotheses: int = 8
    """Best coarse hypotheses that get a trial round; the most refined inliers wins."""
    views: int = 4
    """Training views whose cells each round matches."""
    virtual_views: bool = True
    """Rounds may match the index's virtual views (when it has any); False: training views only, the virtual ones
    still serving retrieval and the coarse stage."""
    view_choice: ViewChoice = "covisible"
    """covisible: nearest of the views that see the query's cells; overlap: most cells; nearest."""
    covisible_angle_deg: float = 30.0
    """covisible: a cell counts only when seen within this angle of its view's line of sight."""
    covisible_share: float = 0.5
    """covisible: the share of the best view's count a view needs."""
    radius_px: Tuple[float, ...] = (12.0, 6.0, 3.0)
    """Search radius of each round around the estimate's projection (query pixels)."""
    two_level_above_px: float = 6.0
    """Rounds wider than this search at half resolution first (inf: never)."""
    repeats: int = 0
    """Repeat the first round up to this many times while it moves the pose by settle-deg."""
    settle_deg: float = 0.5
    """Rotation (degrees) under which a round counts as settled."""
    reprojection_threshold_px: float = 2.0
    """PnP inlier threshold of the rounds, in query pixels."""
    fine_round: bool = False
    """A last round on 1-pixel cells (the index stores them); its pose is reported."""
    placed_points: bool = False
    """Match the cells at the points the index placed by grey-level patches where it placed them (as the patch rounds
    do; more precise than the CNN-triangulated or rescaled point), else at their point."""


def refinement_views(
    index: MapIndex, c2w: np.ndarray, K: np.ndarray, image_shape, config: RefineConfig, k: Optional[int] = None
) -> List[int]:
    """The ``k`` (default ``config.views``) views whose cells a round matches at ``c2w`` (training views only unless
    ``config.virtual_views``)."""
    k = config.views if k is None else k
    everything = len(index.views)
    if config.view_choice == "nearest":
        views = index.nearest_views(c2w, everything)
    else:
        size = (image_shape[1], image_shape[0])
        if config.view_choice == "covisible":
            views = index.covisible_views(c2w, K, size, everything, config.covisible_angle_deg, config.covisible_share)
        else:
            views = index.overlapping_views(c2w, K, size, everything)
    if not config.virtual_views:
        views = [v for v in views if v < index.training_views]
    return views[:k]


def stacked_cells(cells: List[ViewCells], views: List[int], placed: bool = False) -> Tuple[np.ndarray, torch.Tensor]:
    """The cells of ``views`` as one set: ((N, 3) float64 points, (N, D) descriptors); empty for no view. ``placed``:
    each cell at its patch-placed point where the index has one (``RefineConfig.placed_points``)."""
    if not views:
        dim = cells[0].descriptors.shape[1] if cells else 0
        device = cells[0].descriptors.device if cells else "cpu"
        return np.zeros((0, 3)), torch.zeros((0, dim), device=device)
    points = (
        torch.cat([cells[v].placed_points if placed else cells[v].points for v in views]).numpy().astype(np.float64)
    )
    return points, torch.cat([cells[v].descriptors for v in views])


def projected_cells(points: np.ndarray, c2w: np.ndarray, K: np.ndarray, image_shape, margin: float):
    """(N, 3) world points -> their (N, 2) pixels at ``c2w`` and the indices of those in front of the camera and at
    least ``margin`` pixels inside the image."""
    pixels, _, in_front = project_c2w(points, c2w, K)
    return pixels, np.flatnonzero(inside_image(pixels, in_front, image_shape[1], image_shape[0], margin))


@dataclass
class RefinementRound:
    """One round's outcome."""

    pnp: PnPResult
    num_matches: int = 0
    """Cells that found a match in the query."""
    num_projected: int = 0
    """Cells of the round's views that project into the query at the estimate it started from."""
    radius_px: float = float("nan")
    view_disagreement_deg: float = float("nan")
    """The largest rotation between the joint pose and the pose from one view's matches alone (NaN when not
    diagnosed or fewer than two views have enough matches): biased depth differs between views."""
    centre_sigma: float = float("nan")
    """How loosely the inliers hold the camera centre (world units, ``camera_centre_sigma``; NaN on fine cells)."""
    inlier_depth: float = float("nan")
    """Median depth of the inliers' 3D points in the camera (world units; NaN on fine cells): how far the view sees."""
    fine: bool = False

    @property
    def c2w(self) -> np.ndarray:
        """The round's pose (camera-to-world, OpenGL, normalised frame); only when ``pnp.success``."""
        return opencv_w2c_to_opengl_c2w(self.pnp.R, self.pnp.t)

    @property
    def coverage(self) -> float:
        """The share of projected cells that found a match."""
        return self.num_matches / max(1, self.num_projected)

    @property
    def ratio(self) -> float:
        """The share of matches the pose explains."""
        return self.pnp.num_inliers / max(1, self.num_matches)


def refinement_round(
    index: MapIndex,
    query: QueryFeatures,
    K: np.ndarray,
    c2w: np.ndarray,
    radius: float,
    config: RefineConfig,
    solve: PoseSolver,
    min_similarity: float,
    fine: bool = False,
    diagnose: bool = False,
) -> RefinementRound:
    """Cells of the refinement views at ``c2w`` (``fine``: the index's 1-pixel cells) matched in the query within
    ``radius`` of where ``c2w`` projects them, then PnP; ``diagnose`` adds the per-view disagreement (a PnP per
    view)."""
    cells = index.fine if fine else index.views
    views = [v for v in refinement_views(index, c2w, K, query.shape, config) if v < len(cells)]  # fine: training only
    points3d, descriptors = stacked_cells(cells, views, placed=config.placed_points)
    source = np.concatenate([np.full(len(cells[v].points), v) for v in views]) if views else np.zeros(0, int)
    pixels, keep = projected_cells(points3d, c2w, K, query.shape, margin=radius + 1)
    if len(keep) == 0:
        failed = PnPResult(False, message="no index cell projects into the query at the estimate")
        return RefinementRound(failed, radius_px=radius, fine=fine)
    device = query.device
    rendered = descriptors[torch.from_numpy(keep).to(descriptors.device)].to(device)
    expected = torch.from_numpy(pixels[keep]).float().to(device)
    search = two_level_guided_matches if radius > config.two_level_above_px else guided_matches
    found, xy, _ = search(rendered, expected, query.feature_map, int(np.ceil(radius)), min_similarity)
    found = found.cpu().numpy()
    points3d = points3d[keep][found]
    source = source[keep][found]
    points2d = xy.cpu().numpy().astype(np.float64)
    threshold = config.reprojection_threshold_px
    pnp = solve(points3d, points2d, K, threshold, query.shape)
    result = RefinementRound(pnp, len(points3d), len(keep), radius, fine=fine)
    if pnp.success and not fine:
        inliers = pnp.inliers
        result.centre_sigma = camera_centre_sigma(points3d[inliers], points2d[inliers], K, pnp.R, pnp.t)
        result.inlier_depth = float(np.median(project_points(points3d[inliers], K, pnp.R, pnp.t)[1][:, 2]))
    if pnp.success and not fine and diagnose:
        angles = []
        for view in np.unique(source):
            mine = source == view
            if mine.sum() < 2 * solve.config.min_inliers:
                continue
            alone = solve(points3d[mine], points2d[mine], K, threshold, query.shape)
            if alone.success:
                angles.append(rotation_angle_deg(alone.R @ pnp.R.T))
        if len(angles) >= 2:
            result.view_disagreement_deg = float(max(angles))
    return result


@dataclass
class Refinement:
    """The chosen hypothesis and every round that refined it."""

    hypothesis: Hypothesis
    num_trials: int
    """Hypotheses that got a trial round (1: no trial)."""
    rounds: List[RefinementRound] = field(default_factory=list)
    """The rounds at ``RefineConfig.radius_px`` (the winner's trial first), in order; the last decides."""
    trial_scores: List[int] = field(default_factory=list)
    """Inliers of each trial round (0 where it failed), in the order of the hypotheses tried."""
    fine: Optional[RefinementRound] = None
    """The fine round, when run."""

    @property
    def last(self) -> RefinementRound:
        return self.rounds[-1]

    @property
    def success(self) -> bool:
        return self.last.pnp.success

    @property
    def final_round(self) -> RefinementRound:
        """The round whose pose is reported: the fine round when it succeeded, else the last."""
        return self.fine if self.fine is not None and self.fine.pnp.success else self.last

    def inlier_counts(self) -> List[int]:
        """Inliers of every round run, in order (trials, the rounds after the winner's trial, the fine round)."""
        counts = list(self.trial_scores)
        counts += [r.pnp.num_inliers for r in self.rounds[1 if self.num_trials > 1 else 0 :]]
        return counts + ([self.fine.pnp.num_inliers] if self.fine is not None else [])


def refine(
    index: MapIndex,
    query: QueryFeatures,
    K: np.ndarray,
    candidates: List[Hypothesis],
    config: RefineConfig,
    solve: PoseSolver,
    min_similarity: float,
    diagnose: bool = False,
) -> Refinement:
    """Trial rounds for ``candidates`` (best first, at least one), then the winner's rounds through
    ``config.radius_px`` (stopping at the first that fails) and the fine round; ``diagnose``: the last round records
    the per-view disagreement."""
    schedule = list(config.radius_px)

    def run(c2w: np.ndarray, radius: float, last: bool) -> RefinementRound:
        return refinement_round(index, query, K, c2w, radius, config, solve, min_similarity, diagnose=diagnose and last)

    first_round, scores = None, []
    if len(candidates) > 1:  # one round at the first radius each; the most refined inliers wins
        trials = [run(hypothesis_c2w(h), schedule[0], len(schedule) == 1) for h in candidates]
        scores = [t.pnp.num_inliers if t.pnp.success else 0 for t in trials]
        winner = int(np.argmax(scores))
        best, first_round = candidates[winner], trials[winner]  # its trial is its first refinement round
    else:
        best = candidates[0]
    refinement = Refinement(best, len(candidates), trial_scores=scores)
    c2w, position, repeats = hypothesis_c2w(best), 0, 0
    while position < len(schedule):
        last = position == len(schedule) - 1
        current = first_round if first_round is not None else run(c2w, schedule[position], last)
        first_round = None
        refinement.rounds.append(current)
        if not current.pnp.success:
            break
        moved = rotation_angle_deg(current.c2w[:3, :3].T @ c2w[:3, :3])
        c2w = current.c2w
        if position == 0 and moved > config.settle_deg and repeats < config.repeats:
            repeats += 1  # the first radius again, from where this round left the estimate
        else:
            position += 1
    if refinement.success and config.fine_round:
        refinement.fine = refinement_round(
            index, query, K, c2w, schedule[-1], config, solve, min_similarity, fine=True
        )  # fmt: skip
    return refinement


def hypothesis_c2w(hypothesis: Hypothesis) -> np.ndarray:
    """A coarse hypothesis's pose (camera-to-world, OpenGL, normalised frame)."""
    return opencv_w2c_to_opengl_c2w(hypothesis.pnp.R, hypothesis.pnp.t)
