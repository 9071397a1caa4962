"""PnP + RANSAC on synthetic correspondences from a known camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crossfire_ns.geometry import (
    backproject,
    covariance_normalized_to_original,
    normalized_to_original,
    opencv_w2c_to_opengl_c2w,
    pose_error_vector,
    pose_errors,
    rotation_vector,
)
from crossfire_ns.localize.matchers.feature import localized
from crossfire_ns.localize.pnp import (
    CALIBRATED,
    CHI2_6_MEDIAN,
    FIRST_ORDER,
    CovarianceWidening,
    PnPConfig,
    PnPResult,
    camera_centre_sigma,
    pose_covariance,
    solve_pnp,
    solve_pnp_poselib,
    solve_pnp_ransac,
)

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


def _noisy_solutions(num_trials: int, noise_px: float, seed: int):
    """(estimated R, t, their covariance, the error vector to the true pose) of PnP under Gaussian pixel noise."""
    points3d, _, R, t, _ = synthetic(80, 0.0, 0.0, seed=seed)
    exact, _ = cv2.projectPoints(points3d, cv2.Rodrigues(R)[0], t, K, None)
    exact = exact.reshape(-1, 2)
    true_c2w = opencv_w2c_to_opengl_c2w(R, t)
    rng = np.random.default_rng(seed)
    for _ in range(num_trials):
        noisy = exact + rng.normal(0.0, noise_px, exact.shape)
        ok, rvec, tvec = cv2.solvePnP(points3d, noisy, K, None, cv2.Rodrigues(R)[0], t.copy(), True)
        assert ok
        Rs, ts = cv2.Rodrigues(rvec)[0], tvec.reshape(3)
        error = pose_error_vector(opencv_w2c_to_opengl_c2w(Rs, ts), true_c2w)
        yield Rs, ts, pose_covariance(points3d, noisy, K, Rs, ts), error


def test_pose_covariance_is_calibrated_under_gaussian_pixel_noise():
    """Under the noise it assumes, the true pose falls inside the 50/90/99% chi-square(6) ellipsoids as often as
    their levels say (300 solves, noise estimated from the residuals)."""
    distances = np.array([e @ np.linalg.solve(cov, e) for _, _, cov, e in _noisy_solutions(300, 1.0, seed=5)])
    for level, quantile in ((0.5, 5.348), (0.9, 10.645), (0.99, 16.812)):
        assert abs(np.mean(distances < quantile) - level) < 0.06, level


def test_pose_covariance_centre_block_agrees_with_camera_centre_sigma_and_scales_with_the_noise():
    points3d, points2d, R, t, _ = synthetic(200, 0.0, 0.0, seed=2)
    cov = pose_covariance(points3d, points2d, K, R, t, sigma_px=1.0)
    assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0)
    centre_sigma = camera_centre_sigma(points3d, points2d, K, R, t, min_sigma_px=1.0)  # noise-free: the 1 px floor
    assert np.sqrt(np.trace(cov[3:, 3:])) == pytest.approx(centre_sigma, rel=1e-6)
    np.testing.assert_allclose(pose_covariance(points3d, points2d, K, R, t, sigma_px=2.0) / 4.0,
                               pose_covariance(points3d, points2d, K, R, t, sigma_px=1.0), rtol=1e-12)  # fmt: skip


def test_pose_covariance_refuses_an_unconstrained_pose():
    points3d, points2d, R, t, _ = synthetic(30, 0.0, 0.5, seed=3)
    assert pose_covariance(points3d[:3], points2d[:3], K, R, t) is None
    behind = points3d.copy()
    behind[0] = -R.T @ t - 2.0 * R[2]  # two units behind the camera
    assert pose_covariance(behind, points2d, K, R, t) is None
    same = np.repeat(points3d[:1], 30, axis=0)
    assert pose_covariance(same, np.repeat(points2d[:1], 30, axis=0), K, R, t) is None


@pytest.mark.parametrize("solver", ["poselib", "opencv"])
def test_solve_pnp_adds_the_covariance_of_its_inliers_and_leaves_the_pose_alone(solver):
    points3d, points2d, *_ = synthetic(400, 0.3, 0.5, seed=6)
    config = PnPConfig(solver=solver)
    result = solve_pnp(config, points3d, points2d, K, 3.0, (HEIGHT, WIDTH, 3))
    assert result.success and result.covariance.shape == (6, 6)
    mask = result.inliers
    np.testing.assert_array_equal(
        result.covariance, pose_covariance(points3d[mask], points2d[mask], K, result.R, result.t)
    )
    if solver == "opencv":  # deterministic: the same pose with or without the covariance
        plain = solve_pnp_ransac(points3d, points2d, K, reprojection_threshold_px=3.0,
                                 iterations=config.ransac_iterations, min_inliers=config.min_inliers)  # fmt: skip
        np.testing.assert_array_equal(plain.R, result.R)
        np.testing.assert_array_equal(plain.t, result.t)
    failed = solve_pnp(config, points3d[:8], points2d[:8], K, 3.0, (HEIGHT, WIDTH, 3))
    assert not failed.success and failed.covariance is None


def test_covariance_to_the_original_frame_follows_the_poses():
    """A small error of a normalised-frame pose, carried through ``normalized_to_original``, is the error the
    converted covariance describes: with cov = e e^T, the converted one is e' e'^T."""
    rng = np.random.default_rng(4)
    transform = np.eye(4)
    transform[:3, :3] = cv2.Rodrigues(np.array([0.3, -0.5, 1.1]))[0]
    transform[:3, 3] = [0.4, -2.0, 0.7]
    scale = 0.37
    estimate = opencv_w2c_to_opengl_c2w(cv2.Rodrigues(np.array([0.2, 0.1, -0.4]))[0], np.array([0.1, 0.3, 2.0]))
    error = rng.normal(0.0, 1e-6, 6)
    truth = estimate.copy()
    truth[:3, :3] = cv2.Rodrigues(error[:3])[0] @ estimate[:3, :3]
    truth[:3, 3] += error[3:]
    error_original = pose_error_vector(
        normalized_to_original(estimate, transform, scale), normalized_to_original(truth, transform, scale)
    )
    converted = covariance_normalized_to_original(np.outer(error, error), transform, scale)
    np.testing.assert_allclose(converted, np.outer(error_original, error_original), rtol=1e-4, atol=1e-20)
    assert np.linalg.norm(error_original[3:]) == pytest.approx(np.linalg.norm(error[3:]) / scale, rel=1e-4)


def test_a_localized_estimate_carries_the_covariance_of_its_pnp():
    points3d, points2d, *_ = synthetic(200, 0.0, 0.5, seed=7)
    result = solve_pnp(PnPConfig(solver="opencv"), points3d, points2d, K, 3.0, (HEIGHT, WIDTH, 3))
    estimate = localized(result, 200)
    assert estimate.success and estimate.covariance is result.covariance


def test_rotation_vector_is_exact_for_tiny_angles_and_agrees_with_opencv_elsewhere():
    for vector in ([1e-9, -2e-9, 3e-9], [2e-6, 0.0, -1e-6], [0.3, -0.2, 0.9], [0.0, 3.1, 0.0]):
        R = cv2.Rodrigues(np.array(vector))[0] if np.linalg.norm(vector) > 1e-4 else _exact_small(np.array(vector))
        np.testing.assert_allclose(rotation_vector(R), vector, rtol=1e-6, atol=1e-15)


def _exact_small(vector: np.ndarray) -> np.ndarray:
    """exp([v]_x) by its series, for angles OpenCV's Rodrigues would round."""
    skew = np.array([[0, -vector[2], vector[1]], [vector[2], 0, -vector[0]], [-vector[1], vector[0], 0]])
    return np.eye(3) + skew + skew @ skew / 2.0


def test_the_covariance_widening_is_its_scale_for_an_exact_fit_and_grows_with_the_error():
    assert FIRST_ORDER.factor(2.0) == FIRST_ORDER.factor(float("nan")) == 1.0
    widening = CovarianceWidening(scale=4.0, knee_px=0.5, error_exponent=2.0)
    assert widening.factor(0.0) == pytest.approx(4.0)
    assert widening.factor(0.5) == pytest.approx(8.0)  # at the knee the query's share equals the constant one
    assert widening.factor(1.0) == pytest.approx(20.0)
    assert widening.factor(float("nan")) == pytest.approx(8.0)  # no error figure: as at the knee
    blurred, sharp = CALIBRATED.factor(1.1), CALIBRATED.factor(0.25)
    assert blurred > 5 * sharp > 5 * CALIBRATED.scale  # blurred poses' larger shared errors are stated


def test_the_map_share_widens_by_the_leave_one_out_ratio_above_its_floor():
    widening = CovarianceWidening(scale=2.0, knee_px=0.5, error_exponent=2.0, map_exponent=0.5, map_floor=1.0)
    assert widening.factor(0.0) == pytest.approx(2.0)  # a ratio of 1 widens nothing
    assert widening.factor(0.0, map_ratio=4.0) == pytest.approx(4.0)
    assert widening.factor(0.0, map_ratio=0.25) == widening.factor(0.0, float("nan")) == pytest.approx(2.0)
    unfloored = CovarianceWidening(scale=1.0, map_exponent=0.5, map_floor=0.0)
    assert unfloored.factor(0.3, map_ratio=0.25) == pytest.approx(0.5)  # a map whose own views fit tightly
    assert unfloored.factor(0.3, map_ratio=0.0) == 1.0  # an exact self-check never states a zero covariance
    assert widening.factor(0.5, map_ratio=9.0) == pytest.approx(2.0 * 2.0 * 3.0)
    records = [(CHI2_6_MEDIAN * 3.0 * widening.query_share(e), e) for e in (0.1, 0.5, 1.0)]
    assert widening.leave_one_out_ratio(records) == pytest.approx(3.0)  # the query share taken out of each
    assert np.isnan(widening.leave_one_out_ratio([]))
    assert FIRST_ORDER.factor(0.3, map_ratio=50.0) == 1.0  # no map exponent: the ratio is not read
