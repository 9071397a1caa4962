"""Matching SIFT descriptors (COLMAP's brute-force matcher) and checking matches against known poses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from benchmarks.peer.features import Features


@dataclass
class MatchConfig:
    """COLMAP's matching settings."""

    max_ratio: float = 0.8
    """Lowe's ratio test: best / second-best descriptor distance."""
    max_distance: float = 0.7
    """Largest descriptor distance accepted (COLMAP's default)."""
    cross_check: bool = True
    """Keep mutual nearest neighbours only."""


def make_matcher(config: Optional[MatchConfig] = None):
    """A pycolmap SIFT matcher on the CPU (``MatchConfig()`` by default)."""
    import pycolmap

    config = config or MatchConfig()

    options = pycolmap.FeatureMatchingOptions()
    options.use_gpu = False
    options.sift.max_ratio = config.max_ratio
    options.sift.max_distance = config.max_distance
    options.sift.cross_check = config.cross_check
    return pycolmap.FeatureMatcher.create(options, pycolmap.Device.cpu)


def match(matcher, a: Features, b: Features) -> np.ndarray:
    """(M, 2) int64 indices ``(index in a, index in b)`` of the matches between two images."""
    import pycolmap

    if len(a) == 0 or len(b) == 0:
        return np.zeros((0, 2), dtype=np.int64)

    def wrap(features: Features):
        keypoints = pycolmap.keypoints_from_matrix(np.ascontiguousarray(features.keypoints, dtype=np.float32))
        descriptors = pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, features.descriptors)
        return keypoints, descriptors

    matches = matcher.match(*wrap(a), *wrap(b))
    return np.asarray(matches, dtype=np.int64).reshape(-1, 2)


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrix of a 3-vector."""
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def essential_from_poses(R1: np.ndarray, t1: np.ndarray, R2: np.ndarray, t2: np.ndarray) -> np.ndarray:
    """Essential matrix with ``x2^T E x1 = 0`` for normalised points of two OpenCV world-to-camera poses."""
    R = R2 @ R1.T
    t = t2 - R @ t1
    return skew(t) @ R


def sampson_distances(x1: np.ndarray, x2: np.ndarray, E: np.ndarray) -> np.ndarray:
    """Sampson distance (first-order geometric error, in the units of ``x``) of (N, 2) point pairs under ``E``."""
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], axis=1)
    Ex1 = h1 @ E.T
    Etx2 = h2 @ E
    numerator = np.einsum("ij,ij->i", h2, Ex1) ** 2
    denominator = Ex1[:, 0] ** 2 + Ex1[:, 1] ** 2 + Etx2[:, 0] ** 2 + Etx2[:, 1] ** 2
    return np.sqrt(numerator / np.maximum(denominator, 1e-18))


def epipolar_inliers(x1: np.ndarray, x2: np.ndarray, pose1: tuple, pose2: tuple, max_error: float) -> np.ndarray:
    """Mask of the normalised matches ``(x1, x2)`` consistent with the known poses (Sampson distance below
    ``max_error``, normalised units: divide a pixel threshold by the focal length)."""
    if len(x1) == 0:
        return np.zeros(0, dtype=bool)
    E = essential_from_poses(*pose1, *pose2)
    return sampson_distances(np.asarray(x1, np.float64), np.asarray(x2, np.float64), E) <= max_error
