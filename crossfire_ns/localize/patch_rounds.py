"""Patch stage: the refined pose re-solved from grey-level patches of the training images aligned in the query.

The CNN's matches carry a per-query shift that PnP turns into rotation; normalised cross-correlation of grey-level
patches does not. Each round aligns the most contrasted trusted cells' training patches in the query
(``patch_alignment.align_patches``) near where the estimate puts them and re-solves; when a round finds too few of the
patches it searched (blur, low light) the estimate it started from is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w, opengl_c2w_to_opencv_w2c, rotation_angle_deg
from crossfire_ns.localize.map_index import MapIndex
from crossfire_ns.localize.patch_alignment import PatchConfig, align_patches
from crossfire_ns.localize.patch_triangulation import cell_contrast, view_camera, view_greys
from crossfire_ns.localize.pnp import PnPResult, PoseSolver, camera_centre_sigma
from crossfire_ns.localize.query_features import QueryFeatures
from crossfire_ns.localize.refine import RefineConfig, projected_cells, refinement_views


@dataclass
class PatchRound:
    """One patch round's outcome."""

    pnp: PnPResult
    num_matches: int
    """Patches found (peak NCC at least ``min_ncc``)."""
    num_searched: int
    """Patches searched."""
    points3d: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    """(num_matches, 3) the found patches' points, as PnP was given them."""
    points2d: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    """(num_matches, 2) where they were found in the query (pixels)."""

    def centre_sigma(self, K: np.ndarray, min_sigma_px: float) -> float:
        """How loosely the round's inliers hold the camera centre (world units, ``pnp.camera_centre_sigma`` with at
        least ``min_sigma_px`` of pixel noise); NaN when the round found no pose."""
        if not self.pnp.success:
            return float("nan")
        inliers = self.pnp.inliers
        return camera_centre_sigma(
            self.points3d[inliers], self.points2d[inliers], K, self.pnp.R, self.pnp.t, min_sigma_px
        )


def patch_round(
    crossfire_map,
    index: MapIndex,
    query: QueryFeatures,
    K: np.ndarray,
    c2w: np.ndarray,
    search: int,
    config: PatchConfig,
    views_config: RefineConfig,
    solve: PoseSolver,
) -> PatchRound:
    """The most contrasted trusted cells of the refinement views at ``c2w`` (``views_config``), each found in the
    query within ``search`` pixels of where ``c2w`` projects it by NCC of its training patch; then PnP."""
    grey = query.grey(config.smoothing_px)
    R_query, t_query = opengl_c2w_to_opencv_w2c(c2w)
    margin = config.radius_px + search + 2
    views = refinement_views(index, c2w, K, grey.shape, views_config)
    greys = view_greys(crossfire_map, index, config.radius_px, config.smoothing_px)
    points3d, points2d, searched = [], [], 0
    for view in views:
        cells = index.views[view]
        points = cells.placed_points.numpy().astype(np.float64)
        _, keep = projected_cells(points, c2w, K, grey.shape, margin=margin)
        view_grey, contrast = greys[view]
        (K_view, R_view, t_view), scale = view_camera(index, view, view_grey)
        rich = cell_contrast(cells.pixels.numpy()[keep], contrast, scale) >= config.min_contrast
        keep = keep[rich]
        budget = max(1, config.max_cells // len(views))
        if len(keep) > budget:  # evenly over the view (the most contrasted patches straddle occlusion edges)
            keep = keep[np.linspace(0, len(keep) - 1, budget).round().astype(np.int64)]
        if len(keep) == 0:
            continue
        searched += len(keep)
        xy, score, ok = align_patches(
            grey, view_grey, K_view, R_view, t_view, points[keep], K, R_query, t_query, config.radius_px, search
        )
        ok &= score >= config.min_ncc
        points3d.append(points[keep][ok.numpy()])
        points2d.append(xy[ok.numpy()])
    if not points3d:
        return PatchRound(PnPResult(False, message="no training patch found in the query"), 0, searched)
    points3d, points2d = np.concatenate(points3d), np.concatenate(points2d)
    pnp = solve(points3d, points2d, K, config.reprojection_threshold_px, query.shape)
    return PatchRound(pnp, len(points3d), searched, points3d, points2d)


@dataclass
class PatchRefinement:
    """The patch rounds run from one estimate."""

    rounds: List[PatchRound] = field(default_factory=list)
    failed: Optional[str] = None
    """Why the rounds' pose is not taken ("round N: ..."); None when every round succeeded."""
    c2w: Optional[np.ndarray] = None
    """The last round's pose when every round succeeded (camera-to-world, OpenGL, normalised frame)."""
    rotation_deg: float = float("nan")
    """How far that pose turned from the estimate the rounds started from."""

    @property
    def last(self) -> Optional[PatchRound]:
        return self.rounds[-1] if self.rounds else None

    @property
    def first_round_held(self) -> bool:
        """Whether the first round found its share of the patches (a later round may still have failed)."""
        return len(self.rounds) > 1 or (len(self.rounds) == 1 and self.failed is None)


def patch_rounds(
    crossfire_map,
    index: MapIndex,
    query: QueryFeatures,
    K: np.ndarray,
    c2w: np.ndarray,
    config: PatchConfig,
    views_config: RefineConfig,
    solve: PoseSolver,
) -> PatchRefinement:
    """``config.rounds`` patch rounds from ``c2w``; their pose only when every round finds at least
    ``config.min_share`` of the patches it searched."""
    result = PatchRefinement()
    current = c2w
    for position in range(config.rounds):
        search = config.search_px[min(position, len(config.search_px) - 1)]
        aligned = patch_round(crossfire_map, index, query, K, current, search, config, views_config, solve)
        result.rounds.append(aligned)
        pnp = aligned.pnp
        if pnp.success and aligned.num_matches < config.min_share * aligned.num_searched:
            pnp = PnPResult(False, message=f"{aligned.num_matches} of {aligned.num_searched} patches found")
        if not pnp.success:
            result.failed = f"round {position + 1}: {pnp.message}"
            return result
        current = opencv_w2c_to_opengl_c2w(pnp.R, pnp.t)
    if result.rounds:
        result.c2w = current
        result.rotation_deg = rotation_angle_deg(current[:3, :3].T @ c2w[:3, :3])
    return result
