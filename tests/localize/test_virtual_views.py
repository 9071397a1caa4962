"""Virtual views: poses moved off the training cameras, and cells trusted only where training points confirm them."""

import numpy as np

from crossfire_ns.geometry import backproject, opengl_c2w_to_opencv_w2c
from crossfire_ns.localize.virtual_views import height_spread, moved_pose, trusted_distances, up_direction
from crossfire_ns.synthetic import look_at


def test_moves_keep_the_orientation_and_go_where_named():
    c2w = look_at([2.0, 0.0, 0.5], [0.0, 0.0, 0.5])
    up = np.array([0.0, 0.0, 1.0])
    closer = moved_pose(c2w, "closer", 0.5, 0.3, up)
    np.testing.assert_allclose(closer[:3, :3], c2w[:3, :3])
    np.testing.assert_allclose(closer[:3, 3], [1.5, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(moved_pose(c2w, "farther", 0.5, 0.3, up)[:3, 3], [2.5, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(moved_pose(c2w, "up", 0.5, 0.3, up)[:3, 3], [2.0, 0.0, 0.8], atol=1e-12)
    np.testing.assert_allclose(moved_pose(c2w, "down", 0.5, 0.3, up)[:3, 3], [2.0, 0.0, 0.2], atol=1e-12)


def test_orbit_moves_circle_the_point_the_camera_looks_at():
    c2w = look_at([2.0, 0.0, 0.5], [0.0, 0.0, 0.5])  # its right is +y, its up +z
    up = np.array([0.0, 0.0, 1.0])
    pivot = np.array([0.0, 0.0, 0.5])
    for move, where in (("orbit-left", [0.0, -2.0, 0.5]), ("orbit-right", [0.0, 2.0, 0.5])):
        moved = moved_pose(c2w, move, 0.5, 0.3, up, pivot_distance=2.0, orbit_deg=90.0)
        np.testing.assert_allclose(moved[:3, 3], where, atol=1e-9)
        np.testing.assert_allclose(-moved[:3, 2], (pivot - moved[:3, 3]) / 2.0, atol=1e-9)  # still looking at it
        np.testing.assert_allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-9)
    higher = moved_pose(c2w, "orbit-up", 0.5, 0.3, up, pivot_distance=2.0, orbit_deg=30.0)
    lower = moved_pose(c2w, "orbit-down", 0.5, 0.3, up, pivot_distance=2.0, orbit_deg=30.0)
    np.testing.assert_allclose(higher[:3, 3], [2.0 * np.cos(np.radians(30)), 0.0, 0.5 + 1.0], atol=1e-9)
    np.testing.assert_allclose(lower[:3, 3], [2.0 * np.cos(np.radians(30)), 0.0, 0.5 - 1.0], atol=1e-9)
    np.testing.assert_allclose(-higher[:3, 2] * 2.0, pivot - higher[:3, 3], atol=1e-9)


def test_turn_moves_keep_the_centre_and_turn_the_heading_about_up():
    c2w = look_at([2.0, 0.0, 0.5], [0.0, 0.0, 0.5])  # looking along -x, its right +y
    up = np.array([0.0, 0.0, 1.0])
    left = moved_pose(c2w, "turn-left", 0.5, 0.3, up, turn_deg=30.0)
    right = moved_pose(c2w, "turn-right", 0.5, 0.3, up, turn_deg=30.0)
    for moved in (left, right):
        np.testing.assert_allclose(moved[:3, 3], c2w[:3, 3], atol=1e-12)
        np.testing.assert_allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-9)
        np.testing.assert_allclose(moved[:3, 1], c2w[:3, 1], atol=1e-9)  # level: its up stays the scene's
    np.testing.assert_allclose(-left[:3, 2], [-np.cos(np.radians(30)), -np.sin(np.radians(30)), 0.0], atol=1e-9)
    np.testing.assert_allclose(-right[:3, 2], [-np.cos(np.radians(30)), np.sin(np.radians(30)), 0.0], atol=1e-9)


def test_up_direction_and_height_spread_follow_the_cameras():
    ring = np.stack([look_at([np.cos(a), np.sin(a), 0.1 * a], [0, 0, 0]) for a in np.linspace(0, 6, 12)])
    up = up_direction(ring)
    assert up[2] > 0.99
    assert abs(height_spread(ring, up, 0.01) - 0.6) < 0.05
    assert height_spread(ring[:1], up, 0.25) == 0.25  # one camera: at least the spacing


def test_trusted_distances_take_confirming_points_only():
    c2w = look_at([0.0, 0.0, 0.0], [0.0, 1.0, 0.0])
    K = np.array([[10.0, 0, 5.0], [0, 10.0, 4.0], [0, 0, 1]])  # 10 x 8 cells
    rendered = np.full((8, 10), 3.0)
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    # points on the wall 3 units away through cells (2, 1) and (7, 5); one point through (4, 4) far off the render
    u, v = np.array([2.5, 7.5, 4.5]), np.array([1.5, 5.5, 4.5])
    points = backproject(u, v, np.array([3.0, 3.05, 4.5]), K, R, t)  # distances along the rays
    out = trusted_distances(points, c2w, K, rendered, 0.03)
    assert np.isfinite(out).sum() == 2
    np.testing.assert_allclose(out[1, 2], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out[5, 7], 3.05, rtol=1e-6)
    assert np.isnan(out[4, 4])  # 50% off the rendered distance: not trusted
    assert np.isnan(trusted_distances(np.zeros((0, 3)), c2w, K, rendered, 0.03)).all()
