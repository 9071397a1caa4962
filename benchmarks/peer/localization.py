"""Localizing one query against the triangulated map: retrieve by matching, lift to 2D-3D, PnP + refinement.

There is no learned retrieval (hloc would use NetVLAD, whose weights cannot be downloaded here): the query
is matched to every training view that has 3D points and the ``top_k`` views with most 2D-3D matches are
kept. On scenes of 17 to 100 training views that costs well under a second per query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from benchmarks.peer.features import Features
from benchmarks.peer.matching import match
from benchmarks.peer.triangulation import SfmMap


@dataclass
class LocalizationConfig:
    """How a query is localized."""

    top_k: int = 10
    """Training views whose 2D-3D matches are pooled for PnP."""
    max_error_px: float = 4.0
    """RANSAC inlier threshold in query pixels (ns-localize uses 4 px too)."""
    min_inliers: int = 12
    """Fewer PnP inliers than this and the query is reported as failed (ns-localize's default)."""


@dataclass
class PeerEstimate:
    """Outcome for one query; ``rigid`` is a pycolmap ``Rigid3d`` (OpenCV world-to-camera) when localized."""

    success: bool
    rigid: object = None
    num_inliers: int = 0
    num_matches: int = 0
    reprojection_error_px: float = float("nan")
    message: str = ""
    retrieved: Sequence[int] = ()


def correspondences(query: Features, train_features: Sequence[Features], sfm: SfmMap, matcher, top_k: int) -> tuple:
    """(points2D (M, 2), points3D (M, 3), retrieved image indices): unique (query keypoint, 3D point) pairs
    from the ``top_k`` training views with the most matches to triangulated points."""
    candidates: List[tuple] = []
    for index, features in enumerate(train_features):
        ids = sfm.point_ids[index]
        if len(features) == 0 or not (ids >= 0).any():
            continue
        matches = match(matcher, query, features)
        if len(matches) == 0:
            continue
        point = ids[matches[:, 1]]
        keep = point >= 0
        if keep.any():
            candidates.append((int(keep.sum()), index, np.stack([matches[keep, 0], point[keep]], axis=1)))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    chosen = candidates[:top_k]
    if not chosen:
        return np.zeros((0, 2)), np.zeros((0, 3)), []
    pairs = np.unique(np.concatenate([c[2] for c in chosen]), axis=0)
    return query.xy[pairs[:, 0]], sfm.points3d[pairs[:, 1]], [c[1] for c in chosen]


def estimate_pose(points2d: np.ndarray, points3d: np.ndarray, camera, config: LocalizationConfig) -> PeerEstimate:
    """COLMAP's absolute pose: P3P LO-RANSAC, then non-linear refinement on the inliers."""
    import pycolmap

    n = len(points2d)
    if n < max(4, config.min_inliers):
        return PeerEstimate(False, num_matches=n, message=f"too few 2D-3D matches: {n}, need {config.min_inliers}")
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = float(config.max_error_px)
    result = pycolmap.estimate_and_refine_absolute_pose(
        np.asarray(points2d, dtype=np.float64), np.asarray(points3d, dtype=np.float64), camera, options
    )
    if result is None:
        return PeerEstimate(False, num_matches=n, message="RANSAC found no pose")
    rigid = result["cam_from_world"]
    inliers = np.asarray(result["inlier_mask"], dtype=bool)
    num_inliers = int(inliers.sum())
    error = _reprojection_error(points2d[inliers], points3d[inliers], rigid, camera)
    if num_inliers < config.min_inliers:
        return PeerEstimate(
            False, rigid, num_inliers, n, error, f"only {num_inliers} inliers, need at least {config.min_inliers}"
        )
    return PeerEstimate(True, rigid, num_inliers, n, error, f"{num_inliers}/{n} inliers")


def _reprojection_error(points2d: np.ndarray, points3d: np.ndarray, rigid, camera) -> float:
    if len(points2d) == 0:
        return float("nan")
    matrix = np.asarray(rigid.matrix(), dtype=np.float64)
    cam = points3d @ matrix[:, :3].T + matrix[:, 3]
    projected = camera.img_from_cam(np.ascontiguousarray(cam), check_cheirality=False)
    return float(np.mean(np.linalg.norm(np.asarray(projected) - points2d, axis=1)))


def localize(
    query: Features, camera, train_features: Sequence[Features], sfm: SfmMap, matcher, config: LocalizationConfig
) -> PeerEstimate:
    """Pose of one query (its features and pycolmap camera) against the map."""
    points2d, points3d, retrieved = correspondences(query, train_features, sfm, matcher, config.top_k)
    estimate = estimate_pose(points2d, points3d, camera, config)
    estimate.retrieved = retrieved
    return estimate
