"""Tracks from pairwise matches, and one 3D point per track from the known training poses.

This is what hloc's ``triangulation.py`` asks COLMAP to do with a reference model: the poses are fixed,
only points are estimated. Each track is triangulated with COLMAP's LO-RANSAC multi-view triangulation
(``pycolmap.estimate_triangulation``), which drops the observations that do not agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class TriangulationConfig:
    """When a track becomes a 3D point."""

    max_reprojection_px: float = 4.0
    """An observation further than this from the point's projection is an outlier."""
    min_angle_deg: float = 1.5
    """Smallest triangulation angle: below it depth is too uncertain."""
    min_track_length: int = 2
    """Fewest inlier observations a point needs."""


@dataclass
class SfmMap:
    """Triangulated points and, per training image, which keypoint sees which point."""

    points3d: np.ndarray
    """(P, 3) world points (the training poses' frame)."""
    point_ids: List[np.ndarray] = field(default_factory=list)
    """Per image, (N_i,) int64: the point each keypoint observes, -1 for none."""
    track_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """(P,) number of inlier observations of each point."""


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def build_tracks(num_keypoints: Sequence[int], pair_matches: Dict[Tuple[int, int], np.ndarray]) -> List[np.ndarray]:
    """Connected components of the match graph as tracks: (L, 2) arrays of ``(image, keypoint)``.

    Only components with observations in at least two images are kept. A component that holds two keypoints
    of the same image is inconsistent (a wrong match joined two places); it keeps one observation per image,
    the first keypoint in index order, so the triangulation's RANSAC can still use the rest.
    """
    offsets = np.concatenate([[0], np.cumsum(num_keypoints)]).astype(np.int64)
    finder = _UnionFind(int(offsets[-1]))
    for (i, j), matches in pair_matches.items():
        for a, b in np.asarray(matches, dtype=np.int64).reshape(-1, 2):
            finder.union(int(offsets[i] + a), int(offsets[j] + b))
    matched = [
        np.concatenate([offsets[i] + m[:, 0], offsets[j] + m[:, 1]])
        for (i, j), m in ((key, np.asarray(m, dtype=np.int64).reshape(-1, 2)) for key, m in pair_matches.items())
    ]
    members: Dict[int, List[int]] = {}
    for node in np.unique(np.concatenate(matched)) if matched else []:
        members.setdefault(finder.find(int(node)), []).append(int(node))
    tracks = []
    for nodes in members.values():
        nodes = np.unique(nodes)
        images = np.searchsorted(offsets, nodes, side="right") - 1
        _, first = np.unique(images, return_index=True)  # one observation per image
        if len(first) < 2:
            continue
        tracks.append(np.stack([images[first], nodes[first] - offsets[images[first]]], axis=1))
    return tracks


def triangulate_tracks(
    tracks: Sequence[np.ndarray],
    keypoints: Sequence[np.ndarray],
    cameras: Sequence,
    cams_from_world: Sequence,
    config: Optional[TriangulationConfig] = None,
) -> SfmMap:
    """One point per track from the known poses (pycolmap ``Rigid3d``) and cameras (pycolmap ``Camera``).

    ``keypoints[i]`` is (N_i, 2) pixel coordinates of image i. Observations that RANSAC rejects keep
    ``point_id = -1``; tracks with fewer than ``min_track_length`` inliers give no point.
    """
    import pycolmap

    config = config or TriangulationConfig()
    options = pycolmap.EstimateTriangulationOptions()
    options.residual_type = pycolmap.TriangulationResidualType.REPROJECTION_ERROR
    options.ransac.max_error = float(config.max_reprojection_px)
    options.min_tri_angle = float(np.radians(config.min_angle_deg))
    point_ids = [np.full(len(k), -1, dtype=np.int64) for k in keypoints]
    points: List[np.ndarray] = []
    lengths: List[int] = []
    for track in tracks:
        images, kps = track[:, 0], track[:, 1]
        observations = np.stack([keypoints[i][k] for i, k in zip(images, kps)]).astype(np.float64)
        result = pycolmap.estimate_triangulation(
            observations, [cams_from_world[i] for i in images], [cameras[i] for i in images], options
        )
        if result is None:
            continue
        inliers = np.asarray(result["inliers"], dtype=bool)
        if inliers.sum() < config.min_track_length:
            continue
        for i, k in zip(images[inliers], kps[inliers]):
            point_ids[i][k] = len(points)
        points.append(np.asarray(result["xyz"], dtype=np.float64).reshape(3))
        lengths.append(int(inliers.sum()))
    return SfmMap(
        points3d=np.array(points, dtype=np.float64).reshape(-1, 3),
        point_ids=point_ids,
        track_lengths=np.array(lengths, dtype=np.int64),
    )
