"""The viewer's similarity map as numbers: spread of a reference's similarity and the same spot across views."""

import numpy as np

from benchmarks.similarity_spread import spread_and_hits


def _view(h=6, w=8, depth=2.0):
    """Points of an OpenGL camera at the origin (looking down -z) seeing a wall at ``depth``."""
    K = np.array([[4.0, 0, w / 2], [0, 4.0, h / 2], [0, 0, 1]])
    v, u = np.mgrid[0:h, 0:w] + 0.5
    points = np.stack([(u - K[0, 2]) / K[0, 0] * depth, -(v - K[1, 2]) / K[1, 1] * depth, -np.full_like(u, depth)], -1)
    return points, np.linalg.norm(points, axis=-1), K


def test_distinctive_descriptors_light_one_spot_and_the_same_spot_elsewhere():
    points, depth, K = _view()
    h, w = depth.shape
    unique = np.eye(h * w).reshape(h, w, h * w)  # every pixel its own descriptor
    c2ws = np.stack([np.eye(4), np.eye(4)])
    spreads, hits = spread_and_hits([unique, unique], [points, points], [depth, depth], c2ws, [K, K],
                                    [(0, 2, 3), (1, 4, 6)], threshold=0.8, hit_px=1.0)  # fmt: skip
    assert np.allclose(spreads, 1 / (h * w))
    assert hits.tolist() == [1.0, 1.0]


def test_a_flat_field_lights_everything_and_misses_the_spot():
    points, depth, K = _view()
    h, w = depth.shape
    flat = np.ones((h, w, 4)) / 2.0
    c2ws = np.stack([np.eye(4), np.eye(4)])
    spreads, hits = spread_and_hits([flat, flat], [points, points], [depth, depth], c2ws, [K, K], [(0, 4, 6)], 0.8, 1.0)
    assert spreads.tolist() == [1.0]
    assert hits.tolist() == [0.0]  # argmax of a flat map is the first pixel, far from (6, 4)


def test_an_occluded_point_is_not_counted():
    points, depth, K = _view()
    _, near_depth, _ = _view(depth=1.0)
    unique = np.eye(48).reshape(6, 8, 48)
    c2ws = np.stack([np.eye(4), np.eye(4)])
    _, hits = spread_and_hits(
        [unique, unique], [points, points], [depth, near_depth], c2ws, [K, K], [(0, 2, 3)], 0.8, 1.0
    )
    assert len(hits) == 0
