"""The error budget's guided-match offsets on exact synthetic correspondences (no map, no CNN, no render)."""

from __future__ import annotations

import numpy as np

from benchmarks.error_budget import guided_offsets
from tests.localize.stub_index import K, query_features, scene, stub_config, stub_index


def _offsets(shift_px: float) -> np.ndarray:
    """The budget's offsets for a query whose features sit ``shift_px`` to the right of where the true pose puts them."""
    points, descriptors, views, truth = scene()
    moved = truth.copy()
    # the camera moved left by shift_px at the points' depth (4): the features move right in the image
    moved[:3, 3] -= moved[:3, 0] * shift_px * 4.0 / K[0, 0]
    features = query_features(points, descriptors, moved)
    return guided_offsets(stub_config(), stub_index(points, descriptors, views), features, truth, K)


def test_guided_offsets_measure_a_consistent_shift_of_the_features():
    aligned = _offsets(0.0)
    assert len(aligned) > 100
    assert np.linalg.norm(aligned.mean(axis=0)) < 0.2  # pixel quantisation only, no bias
    shifted = _offsets(2.0)
    assert len(shifted) > 100
    assert abs(shifted.mean(axis=0)[0] - 2.0) < 0.4 and abs(shifted.mean(axis=0)[1]) < 0.3
