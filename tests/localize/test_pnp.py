"""PnP + RANSAC on synthetic correspondences from a known camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crossfire_ns.geometry import backproject, pose_errors
from crossfire_ns.localize.pnp import PnPResult, camera_centre_sigma, solve_pnp_poselib, solve_pnp_ransac

K = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 320, 240


def synthetic(n: int, outlier_fraction: float, noise_px: float, seed: int):
    """World points seen by a known camera, their noisy pixels, some replaced by random pixels."""
    rng = np.random.default_rng(seed)
    R, _ = cv2.Rodrigues(np.array([0.1, -0.25, 0.05]))
    t = np.array([0.2, -0.1, 3.0])
    pixels = rng.uniform([0, 0], [WIDTH, HEIGHT], (n, 2))
    points3d = backproject(pixels[:, 0], pixels[:, 1], rng.uniform(2.0, 6.0, n), K, R, t, depth_kind="z")
    observed = pixels + rng.normal(0.0, noise_px, pixels.shape)
    outliers = rng.permutation(n) < round(outlier_fraction * n)
    observed[outliers] = rng.uniform([0, 0], [WIDTH, HEIGHT], (int(outliers.sum()), 2))
    return points3d, observed, R, t, outliers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_pose_with_outliers_and_noise(seed):
    points3d, points2d, R, t, outliers = synthetic(300, 0.3, 0.5, seed)
    result = solve_pnp_ransac(points3d, points2d, K, reprojection_threshold_px=3.0)
    assert result.success, result.message
    t_err, r_err = pose_errors(result.R, result.t, R, t)
    assert r_err < 0.2
    assert t_err < 0.02  # camera ~3-6 units from the points
    assert result.inliers.shape == (300,) and result.inliers.dtype == bool
    assert result.num_inliers == int(result.inliers.sum())
    # nearly all true inliers kept, almost no outlier accepted (a random pixel can fall within 3 px by chance)
    assert (result.inliers & ~outliers).sum() >= 0.97 * (~outliers).sum()
    assert (result.inliers & outliers).sum() <= 3
    assert 0.3 < result.reprojection_error_px < 1.5  # ~ mean of 0.5 px Gaussian noise in 2D


def test_noise_free_is_exact():
    points3d, points2d, R, t, _ = synthetic(60, 0.0, 0.0, 3)
    result = solve_pnp_ransac(points3d, points2d, K)
    t_err, r_err = pose_errors(result.R, result.t, R, t)
    assert result.success and result.num_inliers == 60
    assert r_err < 1e-5 and t_err < 1e-6
    assert result.reprojection_error_px < 1e-4


@pytest.mark.parametrize("n", [0, 1, 3, 8])
def test_too_few_points_fails_cleanly(n):
    points3d, points2d, *_ = synthetic(max(n, 1), 0.0, 0.0, 4)
    result = solve_pnp_ransac(points3d[:n], points2d[:n], K, min_inliers=12)
    assert isinstance(result, PnPResult)
    assert not result.success
    assert "too few" in result.message and "12" in result.message
    assert result.inliers.shape == (n,) and not result.inliers.any()


def test_non_finite_rows_are_ignored():
    points3d, points2d, R, t, _ = synthetic(80, 0.0, 0.2, 5)
    points3d[:5] = np.nan
    points2d[5:8] = np.inf
    result = solve_pnp_ransac(points3d, points2d, K)
    assert result.success
    assert not result.inliers[:8].any() and result.num_inliers >= 70
    assert pose_errors(result.R, result.t, R, t)[1] < 0.2


def test_pure_noise_is_not_a_success():
    rng = np.random.default_rng(6)
    points3d = rng.normal(size=(200, 3)) + [0, 0, 5]
    points2d = rng.uniform([0, 0], [WIDTH, HEIGHT], (200, 2))
    result = solve_pnp_ransac(points3d, points2d, K, reprojection_threshold_px=2.0, min_inliers=30)
    assert not result.success
    assert result.message


def test_mismatched_lengths():
    result = solve_pnp_ransac(np.zeros((10, 3)), np.zeros((9, 2)), K)
    assert not result.success and "9" in result.message


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poselib_recovers_pose_with_outliers_and_noise(seed):
    points3d, points2d, R, t, outliers = synthetic(300, 0.5, 0.5, seed)
    result = solve_pnp_poselib(points3d, points2d, K, reprojection_threshold_px=3.0, image_size=(WIDTH, HEIGHT))
    assert result.success, result.message
    t_err, r_err = pose_errors(result.R, result.t, R, t)
    assert r_err < 0.2 and t_err < 0.02
    assert result.num_inliers == int(result.inliers.sum())
    assert (result.inliers & ~outliers).sum() >= 0.97 * (~outliers).sum()
    assert (result.inliers & outliers).sum() <= 3


def test_poselib_on_a_spread_subset_still_counts_inliers_over_every_match():
    points3d, points2d, R, t, outliers = synthetic(2000, 0.3, 0.5, 5)
    result = solve_pnp_poselib(points3d, points2d, K, reprojection_threshold_px=3.0, max_points=200, min_iterations=0)
    assert result.success, result.message
    t_err, r_err = pose_errors(result.R, result.t, R, t)
    assert r_err < 0.2 and t_err < 0.02
    assert result.num_inliers >= 0.97 * (~outliers).sum() > 200  # counted over all 2000, not the 200 solved on


def test_poselib_noise_free_is_exact_and_agrees_with_opencv():
    points3d, points2d, R, t, _ = synthetic(60, 0.0, 0.0, 3)
    result = solve_pnp_poselib(points3d, points2d, K)
    t_err, r_err = pose_errors(result.R, result.t, R, t)
    assert result.success and result.num_inliers == 60
    assert r_err < 1e-5 and t_err < 1e-6


def test_poselib_refuses_bad_input_with_a_reason():
    points3d, points2d, *_ = synthetic(8, 0.0, 0.0, 4)
    assert not solve_pnp_poselib(points3d, points2d, K, min_inliers=12).success
    assert "too few" in solve_pnp_poselib(points3d, points2d, K, min_inliers=12).message
    assert "2D points" in solve_pnp_poselib(points3d, points2d[:5], K).message
    random2d = np.random.default_rng(0).uniform([0, 0], [WIDTH, HEIGHT], (200, 2))
    random3d = np.random.default_rng(1).uniform(-1, 1, (200, 3)) + [0, 0, 4]
    result = solve_pnp_poselib(random3d, random2d, K, reprojection_threshold_px=1.0, min_inliers=30)
    assert not result.success


def test_camera_centre_sigma_matches_the_scatter_of_noisy_solutions_and_shrinks_with_more_points():
    """The first-order centre uncertainty agrees with the spread of the centres PnP finds under that noise, and falls
    like 1 / sqrt(points); fewer than 4 points leave the centre unconstrained."""
    points3d, _, R, t, _ = synthetic(60, 0.0, 0.0, seed=4)
    exact, _ = cv2.projectPoints(points3d, cv2.Rodrigues(R)[0], t, K, None)
    exact = exact.reshape(-1, 2)
    rng = np.random.default_rng(0)
    centres, sigmas = [], []
    for _ in range(40):
        noisy = exact + rng.normal(0.0, 1.0, exact.shape)
        ok, rvec, tvec = cv2.solvePnP(points3d, noisy, K, None, flags=cv2.SOLVEPNP_ITERATIVE)
        assert ok
        Rs = cv2.Rodrigues(rvec)[0]
        centres.append(-Rs.T @ tvec.reshape(3))
        sigmas.append(camera_centre_sigma(points3d, noisy, K, Rs, tvec))
    scatter = float(np.sqrt(np.trace(np.cov(np.array(centres).T))))
    assert 0.7 < float(np.median(sigmas)) / scatter < 1.4  # 0.99 here
    few = camera_centre_sigma(points3d[:15], exact[:15], K, R, t)
    many = camera_centre_sigma(points3d, exact, K, R, t)  # noise-free: the 0.5 px floor
    assert 1.5 < few / many < 4.0  # sqrt(60 / 15) = 2 for the same spread of points (these 15 spread less: 2.9)
    assert camera_centre_sigma(points3d[:3], exact[:3], K, R, t) == float("inf")
