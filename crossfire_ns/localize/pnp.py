"""Absolute pose from 2D-3D correspondences: OpenCV PnP + RANSAC then Levenberg-Marquardt on the inliers, or poselib's
LO-RANSAC with robust refinement."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence, Tuple

import cv2
import numpy as np

from crossfire_ns.geometry import project_points

MIN_POINTS = 4
"""The fewest correspondences OpenCV's RANSAC PnP accepts (P3P: 3 for the solve, 1 to pick the solution)."""


@dataclass
class PnPResult:
    """Outcome of ``solve_pnp_ransac``; ``R, t`` are OpenCV world-to-camera (``x_cam = R x + t``)."""

    success: bool
    R: Optional[np.ndarray] = None
    t: Optional[np.ndarray] = None
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Boolean mask over the input correspondences."""
    num_inliers: int = 0
    reprojection_error_px: float = float("nan")
    """Mean reprojection error over the inliers, in pixels."""
    message: str = ""
    covariance: Optional[np.ndarray] = None
    """6x6 first-order covariance of the pose (``pose_covariance``: world-frame rotation vector, then camera centre)
    for a successful ``solve_pnp``; None otherwise or when the inliers leave the pose unconstrained."""


def _reprojection(points3d: np.ndarray, points2d: np.ndarray, rvec, tvec, K, dist) -> tuple:
    """Per-point reprojection error (px) and whether each point lies in front of the camera."""
    projected, _ = cv2.projectPoints(points3d, rvec, tvec, K, dist)
    errors = np.linalg.norm(projected.reshape(-1, 2) - points2d, axis=1)
    R, _ = cv2.Rodrigues(rvec)
    in_front = (points3d @ R[2] + float(np.asarray(tvec).reshape(3)[2])) > 0
    return errors, in_front


def _valid_inputs(points3d, points2d, min_inliers: int):
    """``(points3d, points2d, indices of the finite pairs, None)`` as float64, or ``(..., PnPResult)`` saying why
    the input cannot give a pose (mismatched lengths, too few finite pairs)."""
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    n = len(points3d)
    inliers = np.zeros(n, dtype=bool)
    if len(points2d) != n:
        return (
            points3d,
            points2d,
            None,
            PnPResult(False, inliers=inliers, message=f"{n} 3D points but {len(points2d)} 2D points"),
        )
    finite = np.isfinite(points3d).all(axis=1) & np.isfinite(points2d).all(axis=1)
    needed = max(MIN_POINTS, min_inliers)
    if finite.sum() < needed:
        return (
            points3d,
            points2d,
            None,
            PnPResult(
                False,
                inliers=inliers,
                message=f"too few correspondences: {int(finite.sum())} valid of {n}, need at least {needed}",
            ),
        )
    return points3d, points2d, np.flatnonzero(finite), None


def _finish(R, t, mask: np.ndarray, errors: np.ndarray, idx: np.ndarray, n: int, min_inliers: int) -> PnPResult:
    """The result for a pose whose inliers among the finite pairs ``idx`` (of ``n``) are ``mask``."""
    inliers = np.zeros(n, dtype=bool)
    inliers[idx[mask]] = True
    num_inliers = int(mask.sum())
    mean_error = float(errors[mask].mean()) if num_inliers else float("nan")
    if num_inliers < min_inliers:
        return PnPResult(
            False, R, t, inliers, num_inliers, mean_error, f"only {num_inliers} inliers, need at least {min_inliers}"
        )
    return PnPResult(True, R, t, inliers, num_inliers, mean_error, f"{num_inliers}/{n} inliers")


def solve_pnp_ransac(
    points3d: np.ndarray,
    points2d: np.ndarray,
    K: np.ndarray,
    dist_coeffs: Optional[np.ndarray] = None,
    reprojection_threshold_px: float = 4.0,
    iterations: int = 2000,
    confidence: float = 0.9999,
    min_inliers: int = 12,
    flags: int = cv2.SOLVEPNP_P3P,
) -> PnPResult:
    """Robust camera pose from N world points and their pixels (same pixel convention as ``K``).

    RANSAC with P3P minimal samples (4 points per hypothesis, vs 5 for SQPnP/EPnP/iterative) rejects wrong
    matches: on synthetic scenes with OpenCV 4.10 and 2000 iterations it still finds the pose at 85% outliers,
    where the 5-point solvers fail half the time, and it is 2-3x faster. OpenCV refits the RANSAC inliers, then
    LM refinement minimises their reprojection error. Never raises on bad input: too few or degenerate
    correspondences give ``success=False`` with a message saying why (``R, t`` are kept when a pose was
    found but had fewer than ``min_inliers`` inliers, for diagnosis).
    """
    points3d, points2d, idx, refused = _valid_inputs(points3d, points2d, min_inliers)
    if refused is not None:
        return refused
    n = len(points3d)
    inliers = np.zeros(n, dtype=bool)
    K = np.asarray(K, dtype=np.float64)
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64).reshape(-1)
    obj, img = points3d[idx], points2d[idx]
    try:
        ok, rvec, tvec, ransac_inliers = cv2.solvePnPRansac(
            obj,
            img,
            K,
            dist,
            iterationsCount=int(iterations),
            reprojectionError=float(reprojection_threshold_px),
            confidence=float(confidence),
            flags=flags,
        )
    except cv2.error as err:
        return PnPResult(
            False, inliers=inliers, message=f"OpenCV PnP failed: {err.msg if hasattr(err, 'msg') else err}"
        )
    if not ok or ransac_inliers is None or len(ransac_inliers) < MIN_POINTS:
        return PnPResult(False, inliers=inliers, message="RANSAC found no pose consistent with enough matches")

    errors, in_front = _reprojection(obj, img, rvec, tvec, K, dist)
    best_mask = (errors < reprojection_threshold_px) & in_front
    best = (rvec, tvec)
    try:  # LM on the inliers; keep it only if it does not lose inliers
        rvec_lm, tvec_lm = cv2.solvePnPRefineLM(obj[best_mask], img[best_mask], K, dist, rvec.copy(), tvec.copy())
        errors_lm, in_front_lm = _reprojection(obj, img, rvec_lm, tvec_lm, K, dist)
        mask_lm = (errors_lm < reprojection_threshold_px) & in_front_lm
        if mask_lm.sum() >= best_mask.sum():
            best, best_mask, errors = (rvec_lm, tvec_lm), mask_lm, errors_lm
    except cv2.error:
        pass

    R, _ = cv2.Rodrigues(best[0])
    return _finish(R, np.asarray(best[1], dtype=np.float64).reshape(3), best_mask, errors, idx, n, min_inliers)


def solve_pnp_poselib(
    points3d: np.ndarray,
    points2d: np.ndarray,
    K: np.ndarray,
    reprojection_threshold_px: float = 4.0,
    iterations: int = 2000,
    min_inliers: int = 12,
    image_size: Optional[tuple] = None,
    min_iterations: int = 1000,
    max_points: int = 0,
) -> PnPResult:
    """Robust camera pose as ``solve_pnp_ransac`` gives it, from poselib: LO-RANSAC with P3P samples, then a robust
    (Cauchy) bundle refinement of the inliers. Same pixel convention as ``K``; never raises on bad input.

    RANSAC stops once ``success_prob`` (0.9999) is reached for the best inlier ratio so far, but never before
    ``min_iterations`` (poselib's default, 1000): with mostly right matches a few dozen samples suffice.
    ``max_points`` > 0: RANSAC and its refinement see at most this many pairs, evenly spread over the input order
    (poselib's local optimisation and refinement cost grows with every pair); inliers are counted over all of them."""
    import poselib

    points3d, points2d, idx, refused = _valid_inputs(points3d, points2d, min_inliers)
    if refused is not None:
        return refused
    n = len(points3d)
    K = np.asarray(K, dtype=np.float64)
    width, height = image_size if image_size is not None else (2 * K[0, 2], 2 * K[1, 2])
    camera = {
        "model": "PINHOLE",
        "width": int(round(width)),
        "height": int(round(height)),
        "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
    }
    threshold = float(reprojection_threshold_px)
    used = idx
    if 0 < max_points < len(idx):
        used = idx[np.linspace(0, len(idx) - 1, max(MIN_POINTS, max_points)).round().astype(np.int64)]
    pose, info = poselib.estimate_absolute_pose(
        points2d[used],
        points3d[used],
        camera,
        {
            "max_reproj_error": threshold,
            "max_iterations": int(iterations),
            "min_iterations": min(int(min_iterations), int(iterations)),
            "success_prob": 0.9999,
        },
        {"loss_type": "CAUCHY", "loss_scale": threshold / 2.0},
    )
    mask = np.asarray(info.get("inliers", []), dtype=bool)
    if mask.shape != (len(used),) or mask.sum() < MIN_POINTS:
        return PnPResult(
            False, inliers=np.zeros(n, dtype=bool), message="RANSAC found no pose consistent with enough matches"
        )
    R, t = np.asarray(pose.R, dtype=np.float64), np.asarray(pose.t, dtype=np.float64).reshape(3)
    projected, cam = project_points(points3d[idx], K, R, t)
    errors = np.linalg.norm(projected - points2d[idx], axis=1)
    mask = (errors < threshold) & (cam[:, 2] > 0)  # after refinement, by the same rule as the OpenCV path
    return _finish(R, t, mask, errors, idx, n, min_inliers)


def camera_centre_sigma(
    points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray, min_sigma_px: float = 0.5
) -> float:
    """How loosely the correspondences hold the camera centre: the root of the trace of its covariance (world units)
    under a first-order model, with the pixel noise taken from the residuals themselves (at least ``min_sigma_px``).

    Few points over a narrow view let the centre slide along the viewing axis at little reprojection cost; inlier
    shares do not see that, this does. ``points3d`` (N, 3) world, ``points2d`` (N, 2) pixels, ``R, t`` OpenCV
    world-to-camera. The pose's covariance comes from OpenCV's analytic Jacobian of the projection (``projectPoints``)
    and is carried to the centre ``-R^T t`` through Rodrigues' Jacobian. Returns inf when fewer than 4 points or a
    degenerate configuration leave the centre unconstrained."""
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    if len(points3d) < 4:
        return float("inf")
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    rvec, _ = cv2.Rodrigues(R)
    projected, jacobian = cv2.projectPoints(points3d, rvec, t, np.asarray(K, dtype=np.float64), None)
    jacobian = jacobian[:, :6]  # (2N, 6): pixels over (rvec, t); the other columns are intrinsics and distortion
    residual = projected.reshape(-1) - points2d.reshape(-1)
    sigma = max(float(np.sqrt(np.mean(residual**2))), min_sigma_px)
    try:
        pose_covariance = sigma**2 * np.linalg.inv(jacobian.T @ jacobian)
    except np.linalg.LinAlgError:
        return float("inf")
    _, d_rotation = cv2.Rodrigues(rvec)  # (3, 9): row i is d vec(R) / d rvec_i, R row-major
    d_centre = np.concatenate([np.stack([-d_rotation[i].reshape(3, 3).T @ t for i in range(3)], axis=1), -R.T], axis=1)
    return float(np.sqrt(max(np.trace(d_centre @ pose_covariance @ d_centre.T), 0.0)))


def pose_covariance(
    points3d: np.ndarray,
    points2d: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    sigma_px: Optional[float] = None,
) -> Optional[np.ndarray]:
    """First-order 6x6 covariance of a camera pose from its inlier correspondences: ``sigma^2 (J^T J)^-1`` with ``J``
    the Jacobian of the reprojections over the pose.

    Order and frame (what a filter fusing odometry wants, both in the world frame of ``points3d``): a small rotation
    vector ``dtheta`` (radians) about the world axes, ``R_c2w_true = exp([dtheta]_x) R_c2w``, then the camera centre
    ``c = -R^T t`` (world units). The perturbation acts on the camera's orientation in the world, so the camera axes
    (OpenCV or OpenGL) do not change it. ``points3d`` (N, 3) world, ``points2d`` (N, 2) pixels in ``K``'s convention,
    ``R, t`` OpenCV world-to-camera. ``sigma_px``: the pixel noise; None takes it from the residuals
    (``sum r^2 / (2N - 6)``). Every point counts alike (no robust weights): pass the inliers only. Returns None when
    fewer than 4 points, a point behind the camera or a singular ``J^T J`` leave the pose unconstrained."""
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    n = len(points3d)
    if n < MIN_POINTS or len(points2d) != n:
        return None
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    cam = points3d @ R.T + t
    z = cam[:, 2]
    if not np.all(z > 1e-9):
        return None
    fx, fy = K[0, 0], K[1, 1]
    x, y, inv_z = cam[:, 0] / z, cam[:, 1] / z, 1.0 / z
    pixels = np.stack([x * fx, y * fy], axis=1) + K[:2, 2]
    # in camera axes: d(x_cam) = [x_cam]_x R dtheta - R dc, so J = J_cam blockdiag(R, R) with J_cam's rows below
    zero = np.zeros(n)
    jacobian_cam = np.empty((n, 2, 6))
    jacobian_cam[:, 0] = fx * np.stack([x * y, -(1 + x**2), y, -inv_z, zero, x * inv_z], axis=1)
    jacobian_cam[:, 1] = fy * np.stack([1 + y**2, -x * y, -x, zero, -inv_z, y * inv_z], axis=1)
    jacobian_cam = jacobian_cam.reshape(2 * n, 6)
    if sigma_px is None:
        residual = pixels - points2d
        variance = float(np.sum(residual**2)) / max(2 * n - 6, 1)
    else:
        variance = float(sigma_px) ** 2
    rotate = np.zeros((6, 6))
    rotate[:3, :3] = rotate[3:, 3:] = R
    information = rotate.T @ (jacobian_cam.T @ jacobian_cam) @ rotate
    if not np.isfinite(information).all() or np.linalg.cond(information) > 1e12:
        return None
    covariance = variance * np.linalg.inv(information)
    return 0.5 * (covariance + covariance.T)


CHI2_6_MEDIAN = 5.348121
"""The median of chi-square with 6 degrees of freedom: half of calibrated poses lie within this squared distance."""


def mahalanobis_squared(error: np.ndarray, covariance: np.ndarray) -> float:
    """``e^T C^-1 e`` of a (6,) error under a 6x6 covariance (inf when the covariance is singular)."""
    try:
        return float(error @ np.linalg.solve(covariance, error))
    except np.linalg.LinAlgError:
        return float("inf")


@dataclass(frozen=True)
class CovarianceWidening:
    """How much wider than first order a pose covariance is stated. The inliers' errors share causes, so the first-order
    figure is overconfident: by a share for what every pose of a map shares (its depth), and by a share that grows with
    the inliers' reprojection error for what a poor query adds (blur, noise). The first-order covariance is multiplied
    by ``scale * (1 + (error / knee_px) ** error_exponent) * max(map_floor, map_ratio) ** map_exponent``, where
    ``map_ratio`` is how far the map's own training views, localized without their own cells, exceed the query share
    (``leave_one_out_ratio``); chosen on the calibration split (``benchmarks.covariance_calibration fit``)."""

    scale: float = 1.0
    """The factor for a near-exact fit, half of it at ``knee_px``."""
    knee_px: float = 1.0
    """The mean inlier reprojection error (pixels) at which the query's share equals the constant one."""
    error_exponent: float = 0.0
    """How fast the query's share grows with the error beyond the knee (0: no widening for it)."""
    map_exponent: float = 0.0
    """How strongly the map's leave-one-out ratio widens its poses (0: not at all)."""
    map_floor: float = 1.0
    """The map ratio counts as at least this (a map whose own views fit tightly narrows nothing below it)."""

    def query_share(self, mean_error_px: float) -> float:
        """``1 + (error / knee_px) ** error_exponent`` (NaN error: as at the knee)."""
        if self.error_exponent == 0.0:
            return 1.0
        error = float(mean_error_px) if np.isfinite(mean_error_px) else self.knee_px
        return float(1.0 + (max(error, 0.0) / self.knee_px) ** self.error_exponent)

    def factor(self, mean_error_px: float, map_ratio: float = 1.0) -> float:
        """The multiplier for a pose whose inliers reproject ``mean_error_px`` off on average, on a map of
        ``map_ratio`` (NaN or not positive: 1, never a zero covariance)."""
        ratio = float(map_ratio) if np.isfinite(map_ratio) and map_ratio > 0 else 1.0
        map_share = max(self.map_floor, ratio) ** self.map_exponent if self.map_exponent else 1.0
        return float(self.scale * self.query_share(mean_error_px) * map_share)

    def leave_one_out_ratio(self, records: Sequence[Tuple[float, float]]) -> float:
        """How much wider than the query share the map's own poses need their covariance: the median over
        ``records`` ((first-order d2, mean reprojection error px) of training views localized without their own
        cells) of ``d2 / query_share(error)``, over the chi-square median; NaN for no record."""
        if not len(records):
            return float("nan")
        ratios = [d2 / self.query_share(error) for d2, error in records]
        return float(np.median(ratios) / CHI2_6_MEDIAN)


FIRST_ORDER = CovarianceWidening()
"""No widening: ``pose_covariance`` as it comes."""

CALIBRATED = CovarianceWidening(scale=1.0, knee_px=0.15, error_exponent=2.5, map_exponent=0.6, map_floor=0.0)
"""The widening the answers carry by default (chosen on the calibration split, BENCHMARKS.md)."""

QUERY_SHARE = CovarianceWidening(scale=2.0, knee_px=0.25, error_exponent=2.6)
"""The query share alone, as first fitted on the calibration split (no map term): what the camera-centre floor widens
by (``verify.centre_widening``), where it was measured."""


def with_covariance(result: PnPResult, points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray) -> PnPResult:
    """``result`` with its ``covariance`` from its inliers among ``points3d``/``points2d`` when it succeeded; its pose,
    inliers and message untouched."""
    points3d = np.asarray(points3d, dtype=np.float64).reshape(-1, 3)
    points2d = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    if result.success and result.R is not None and result.inliers.shape == (len(points3d),) == (len(points2d),):
        mask = result.inliers
        result.covariance = pose_covariance(points3d[mask], points2d[mask], K, result.R, result.t)
    return result


@dataclass
class PnPConfig:
    """The absolute-pose solver of the index path, and when its pose counts as found."""

    solver: Literal["poselib", "opencv"] = "poselib"
    """poselib (LO-RANSAC, robust refinement) or opencv (RANSAC P3P, then LM)."""
    ransac_iterations: int = 2000
    """RANSAC samples at most."""
    ransac_min_iterations: int = 100
    """poselib: RANSAC samples at least."""
    ransac_max_points: int = 1000
    """poselib solves on this many matches at most, evenly spread (0: all)."""
    min_inliers: int = 12
    """Fewer inliers than this: no pose."""
    min_inlier_ratio: float = 0.1
    """A smaller share of the matches as inliers: no pose (wrong matches agree by chance)."""


def refuse_low_inlier_ratio(result: PnPResult, num_matches: int, min_ratio: float) -> PnPResult:
    """``result``, marked failed when its inliers are less than ``min_ratio`` of the ``num_matches`` matches."""
    if result.success and result.num_inliers < min_ratio * num_matches:
        result.success = False
        result.message = (
            f"only {result.num_inliers} of {num_matches} matches are PnP inliers (< {min_ratio:.0%}): "
            "the pose is unreliable"
        )
    return result


def solve_pnp(
    config: PnPConfig, points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, threshold_px: float, image_shape
) -> PnPResult:
    """The pose of (N, 3) ``points3d`` seen at (N, 2) ``points2d`` with ``K`` in an image of ``image_shape`` (H, W,
    ...), inliers within ``threshold_px``, by ``config``'s solver and floors."""
    if config.solver == "opencv":
        result = solve_pnp_ransac(
            points3d, points2d, K, reprojection_threshold_px=threshold_px, iterations=config.ransac_iterations,
            min_inliers=config.min_inliers,
        )  # fmt: skip
    else:
        result = solve_pnp_poselib(
            points3d, points2d, K, reprojection_threshold_px=threshold_px, iterations=config.ransac_iterations,
            min_inliers=config.min_inliers, image_size=(image_shape[1], image_shape[0]),
            min_iterations=config.ransac_min_iterations, max_points=config.ransac_max_points,
        )  # fmt: skip
    return with_covariance(
        refuse_low_inlier_ratio(result, len(points3d), config.min_inlier_ratio), points3d, points2d, K
    )


@dataclass
class PoseSolver:
    """``solve_pnp`` with one config: the solver every stage of the index path is given."""

    config: PnPConfig = field(default_factory=PnPConfig)

    def __call__(
        self, points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, threshold_px: float, image_shape
    ) -> PnPResult:
        return solve_pnp(self.config, points3d, points2d, K, threshold_px, image_shape)
