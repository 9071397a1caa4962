"""Camera conventions, nerfstudio's pose normalisation, back-projection and pose errors.

Conventions used throughout ``crossfire_ns``:

* nerfstudio / OpenGL camera-to-world (``c2w``): camera x right, y up, looking along -z.
* OpenCV world-to-camera (``R``, ``t``, as returned by ``cv2.solvePnP``): x right, y down, looking along +z,
  ``x_cam = R @ x_world + t``.
* Intrinsics ``K`` and pixel coordinates follow nerfstudio: the image spans ``[0, W] x [0, H]`` and the centre
  of pixel ``(i, j)`` is at ``(j + 0.5, i + 0.5)`` (so a centred principal point is ``cx = W / 2``). OpenCV's
  projection formulae are convention-free, so PnP and ``cv2.projectPoints`` work unchanged as long as the 2D
  points and ``K`` use the same convention.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional, Tuple, Union

import cv2
import numpy as np

_FLIP_YZ = np.diag([1.0, -1.0, -1.0])


def as_4x4(pose: np.ndarray) -> np.ndarray:
    """(..., 3, 4) or (..., 4, 4) -> (..., 4, 4) float64 copy (a 3x4 pose gains the row [0, 0, 0, 1])."""
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape[-2:] == (4, 4):
        return pose.copy()
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected a pose of shape (..., 3, 4) or (..., 4, 4), got {pose.shape}")
    out = np.zeros(pose.shape[:-2] + (4, 4))
    out[..., :3, :] = pose
    out[..., 3, 3] = 1.0
    return out


def pose_matrix(value: Any, where: str = "transform_matrix") -> np.ndarray:
    """A finite 3x4 or 4x4 matrix (nested lists) as a 4x4 float64 camera-to-world; ``ValueError`` otherwise."""
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: not a numeric matrix ({err})") from err
    if matrix.shape not in ((4, 4), (3, 4)) or not np.isfinite(matrix).all():
        raise ValueError(f"{where}: must be a finite 4x4 (or 3x4) camera-to-world matrix, got shape {matrix.shape}")
    return as_4x4(matrix)


def opengl_to_opencv_c2w(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world from OpenGL camera axes (x right, y up, looks along -z) to OpenCV's (x right, y down, +z)."""
    out = as_4x4(c2w)
    out[..., :3, 1:3] *= -1.0
    return out


def opengl_c2w_to_opencv_w2c(c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """nerfstudio camera-to-world (4x4 or 3x4, rigid) -> OpenCV world-to-camera ``(R, t)`` for PnP/projection."""
    c2w = as_4x4(c2w)
    if c2w.shape != (4, 4):
        raise ValueError(f"expected a single pose, got shape {c2w.shape}")
    rot_c2w_cv = c2w[:3, :3] @ _FLIP_YZ  # camera axes y, z flipped: OpenGL -> OpenCV
    R = rot_c2w_cv.T
    t = -R @ c2w[:3, 3]
    return R, t


def opencv_w2c_to_opengl_c2w(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """OpenCV world-to-camera ``(R, t)`` (t may be (3,) or (3, 1), R may be a Rodrigues vector) -> 4x4 OpenGL c2w."""
    R = np.asarray(R, dtype=np.float64)
    if R.size == 3:
        R, _ = cv2.Rodrigues(R.reshape(3, 1))
    t = np.asarray(t, dtype=np.float64).reshape(3)
    c2w = np.eye(4)
    c2w[:3, :3] = R.T @ _FLIP_YZ
    c2w[:3, 3] = -R.T @ t
    return c2w


def original_to_normalized(c2w_orig: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Original-frame c2w (N, 4, 4)/(4, 4) -> nerfstudio's normalised frame, as its dataparsers do it.

    ``transform`` (3x4 or 4x4) and ``scale`` are those of ``dataparser_transforms.json``; the dataparser computes
    ``c2w[:3, :4] = transform @ c2w_orig`` and then scales the translation by ``scale``.
    """
    out = as_4x4(transform) @ as_4x4(c2w_orig)
    out[..., :3, 3] *= scale
    return out


def normalized_to_original(c2w_norm: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """Inverse of ``original_to_normalized``; equals nerfstudio's ``transform_poses_to_original_space(..., "opengl")``."""
    out = as_4x4(c2w_norm)
    out[..., :3, 3] /= scale
    return np.linalg.inv(as_4x4(transform)) @ out


def pose_error_vector(c2w_est: np.ndarray, c2w_true: np.ndarray) -> np.ndarray:
    """(6,) how far the true pose lies from an estimate in the order and frame of a pose covariance
    (``pnp.pose_covariance``): the world-axes rotation vector ``dtheta`` with ``R_true = exp([dtheta]_x) R_est``
    (radians), then ``centre_true - centre_est``. Either camera axes (OpenGL or OpenCV), the same for both."""
    est, true = as_4x4(c2w_est), as_4x4(c2w_true)
    return np.concatenate([rotation_vector(true[:3, :3] @ est[:3, :3].T), true[:3, 3] - est[:3, 3]])


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """(3,) axis times angle (radians) of a rotation matrix, exact for tiny angles too (OpenCV's Rodrigues rounds
    angles under 1e-5 rad to zero)."""
    R = np.asarray(R, dtype=np.float64)
    half_skew = 0.5 * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    sine = float(np.linalg.norm(half_skew))
    angle = float(np.arctan2(sine, 0.5 * (np.trace(R) - 1.0)))
    if angle > np.pi - 1e-3:  # near a half turn the skew part vanishes: OpenCV's branch for it
        return cv2.Rodrigues(R)[0].reshape(3)
    return half_skew if sine < 1e-12 else half_skew * (angle / sine)


def covariance_normalized_to_original(covariance: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """A 6x6 pose covariance (world rotation vector, then camera centre; ``pnp.pose_covariance``) from the normalised
    frame to the original one, the frame change of ``normalized_to_original``.

    ``x_norm = scale (A x_orig + b)`` with ``A`` the rotation of ``transform``: a world rotation vector maps by
    ``A^-1`` and a centre by ``A^-1 / scale``, so the rotation block turns with the frame, the centre block also
    shrinks by ``scale^2`` and the cross block by ``scale``."""
    inverse = np.linalg.inv(as_4x4(transform)[:3, :3])
    change = np.zeros((6, 6))
    change[:3, :3] = inverse
    change[3:, 3:] = inverse / scale
    out = change @ np.asarray(covariance, dtype=np.float64).reshape(6, 6) @ change.T
    return 0.5 * (out + out.T)


def saved_frame_normalization(
    transform: np.ndarray,
    scale: float,
    applied_transform: Optional[np.ndarray] = None,
    applied_scale: Optional[float] = None,
) -> Tuple[np.ndarray, float]:
    """``(transform, scale)`` that normalise poses written in a transforms.json's own frame.

    nerfstudio's ``dataparser_transforms.json`` maps from the *original data* frame, which differs from the frame
    of ``transform_matrix`` in transforms.json when that file has ``applied_transform`` (e.g. ns-process-data from
    COLMAP) or ``applied_scale``: there ``transform = T @ applied_transform`` and ``scale = s * applied_scale``
    while the dataparser applies ``T`` and ``s`` to the saved poses. Pass those two keys of the training
    transforms.json to get ``(T, s)``, to use with ``original_to_normalized`` / ``normalized_to_original``.
    """
    out = as_4x4(transform)
    if applied_transform is not None:
        out = out @ np.linalg.inv(as_4x4(applied_transform))
    if applied_scale is not None:
        scale = scale / float(applied_scale)
    return out[:3], float(scale)


def read_dataparser_transforms(path: Union[str, Path]) -> Tuple[np.ndarray, float]:
    """``(transform (3, 4), scale)`` from a nerfstudio ``dataparser_transforms.json``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    transform = np.asarray(data["transform"], dtype=np.float64)
    if transform.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"{path}: 'transform' must be 3x4 or 4x4, got shape {transform.shape}")
    return transform[:3], float(data["scale"])


def backproject(
    u: np.ndarray,
    v: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    depth_kind: Literal["ray", "z"] = "ray",
) -> np.ndarray:
    """World points (N, 3) seen at pixels ``(u, v)`` with the given depth, for an OpenCV ``(R, t)`` camera.

    ``u, v`` must be in the same pixel convention as ``K`` (nerfstudio: pixel index + 0.5 for pixel centres;
    adding that offset is the caller's business). ``depth_kind="ray"`` is the Euclidean distance from the
    camera centre along the ray, which is what nerfstudio renders as ``depth`` (its ray directions are unit
    vectors); ``"z"`` is the distance along the optical axis.
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    depth = np.asarray(depth, dtype=np.float64).reshape(-1)
    rays = np.linalg.solve(np.asarray(K, dtype=np.float64), np.stack([u, v, np.ones_like(u)]))  # (3, N), z = 1
    if depth_kind == "ray":
        rays = rays / np.linalg.norm(rays, axis=0, keepdims=True)
    elif depth_kind != "z":
        raise ValueError(f"depth_kind must be 'ray' or 'z', got {depth_kind!r}")
    points_cam = rays * depth
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(3, 1)
    return (R.T @ (points_cam - t)).T


def project_points(points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) world points -> ((N, 2) pixels, (N, 3) camera coordinates) for an OpenCV ``(R, t)`` camera
    (``x_cam = R x + t``) with intrinsics ``K`` (pixels in ``K``'s convention); ``backproject``'s inverse. A point on
    the camera plane (|z| < 1e-9) is divided by 1e-9: callers test ``z > 0`` for points in front."""
    cam = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ np.asarray(R, dtype=np.float64).T
    cam = cam + np.asarray(t, dtype=np.float64).reshape(1, 3)
    z = cam[:, 2:]
    pixels = cam[:, :2] / np.where(np.abs(z) > 1e-9, z, 1e-9) * [K[0, 0], K[1, 1]] + np.asarray(K)[:2, 2]
    return pixels, cam


def project_c2w(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, 3) world points -> ((M, 2) pixels, (M,) distance from the camera centre, (M,) in front) for an OpenGL
    camera-to-world ``c2w`` and ``K`` (pixel centres at +0.5)."""
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    pixels, cam = project_points(points, K, R, t)
    return pixels, np.linalg.norm(cam, axis=1), cam[:, 2] > 1e-6


def camera_spacing(centres: np.ndarray) -> float:
    """Median distance from each of (N, 3) camera centres to its nearest neighbour (1 for fewer than two)."""
    if len(centres) < 2:
        return 1.0
    return float(np.median(np.sort(np.linalg.norm(centres[:, None] - centres[None], axis=-1), axis=1)[:, 1]))


def pose_nearness(c2ws: np.ndarray, c2w: np.ndarray, spacing: float) -> np.ndarray:
    """(N,) how far each of ``c2ws`` (N, 4, 4) is from ``c2w`` (OpenGL camera-to-world): camera-centre distance in
    units of ``spacing`` plus the angle between the viewing directions (1 per 30 degrees); smaller is nearer."""
    c2w = np.asarray(c2w, dtype=np.float64)
    distance = np.linalg.norm(c2ws[:, :3, 3] - c2w[:3, 3], axis=1)
    angle = np.degrees(np.arccos(np.clip(-c2ws[:, :3, 2] @ (-c2w[:3, 2]), -1.0, 1.0)))
    return distance / max(spacing, 1e-9) + angle / 30.0


def inside_image(pixels: np.ndarray, in_front: np.ndarray, width: float, height: float, margin: float = 0.0):
    """(M,) bool: the (M, 2) ``pixels`` of points ``in_front`` of the camera that lie at least ``margin`` pixels
    inside a ``width`` x ``height`` image (a search of that radius around them stays in the image)."""
    inside = in_front & (pixels[:, 0] >= margin) & (pixels[:, 0] < width - margin)
    return inside & (pixels[:, 1] >= margin) & (pixels[:, 1] < height - margin)


def distances_along_rays(
    origin: np.ndarray,
    rays: np.ndarray,
    distance: np.ndarray,
    observed: np.ndarray,
    cameras,
    max_error_px: float,
    steps: int = 6,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate points constrained to their own rays: Gauss-Newton on each point's distance alone.

    ``origin`` (3,) and unit ``rays`` (M, 3) define the points ``origin + rays * distance``; ``distance`` (M,) seeds
    them; ``observed`` (M, A, 2) holds each point's pixel in each of the A ``cameras`` (OpenCV ``(K, R, t)``; NaN where
    not observed). From the third step on, an observation farther than ``max_error_px`` from the point's projection
    is an outlier and leaves the fit. A step moves a point by at most a fifth of its distance.

    Returns ((M,) distances, (M, A) bool inliers, (M,) information: the sum of squared pixels per unit distance over
    the inliers; a match noise of n pixels leaves a distance uncertain by about n / sqrt(information))."""
    s = np.asarray(distance, dtype=np.float64).copy()
    matched = np.isfinite(observed[..., 0])
    inlier = matched.copy()
    information = np.zeros(len(s))
    for step in range(steps):
        information[:] = 0.0
        gradient = np.zeros(len(s))
        for a, (K, R, t) in enumerate(cameras):
            here = project_points(origin + rays * s[:, None], K, R, t)[0]
            h = 1e-4 * s
            there = project_points(origin + rays * (s + h)[:, None], K, R, t)[0]
            jacobian = (there - here) / h[:, None]  # (M, 2) pixels per unit distance
            residual = np.nan_to_num(observed[:, a] - here)
            if step >= 2:
                inlier[:, a] = matched[:, a] & (np.linalg.norm(residual, axis=1) <= max_error_px)
            use = inlier[:, a]
            information += np.where(use, (jacobian**2).sum(1), 0.0)
            gradient += np.where(use, (jacobian * residual).sum(1), 0.0)
        update = np.where(information > 0, gradient / np.maximum(information, 1e-12), 0.0)
        s = np.maximum(s + np.clip(update, -0.2 * s, 0.2 * s), 1e-6)
    return s, inlier, information


def scale_intrinsics(
    K: np.ndarray, sx: float, sy: float, pixel_origin: Literal["corner", "center"] = "corner"
) -> np.ndarray:
    """Intrinsics of an image resized by ``(sx, sy)`` (new size = old size * s, as ``cv2.resize`` maps it).

    With ``pixel_origin="corner"`` (nerfstudio, COLMAP: pixel centres at +0.5, the image spans [0, W]) image
    coordinates scale exactly, so ``K' = diag(sx, sy, 1) @ K``. With ``"center"`` (OpenCV calibration: the first
    pixel's centre is at 0) the principal point becomes ``(cx + 0.5) * sx - 0.5``.
    """
    scaled = np.diag([sx, sy, 1.0]) @ np.asarray(K, dtype=np.float64)
    if pixel_origin == "center":
        scaled[0, 2] += 0.5 * sx - 0.5
        scaled[1, 2] += 0.5 * sy - 0.5
    elif pixel_origin != "corner":
        raise ValueError(f"pixel_origin must be 'corner' or 'center', got {pixel_origin!r}")
    return scaled


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees, accurate near 0 and 180 (atan2 of sine and cosine parts)."""
    R = np.asarray(R, dtype=np.float64)
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    sin = np.clip(np.linalg.norm(axis) / 2.0, 0.0, 1.0)
    return float(np.degrees(np.arctan2(sin, cos)))


def pose_errors(R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray) -> Tuple[float, float]:
    """``(camera-centre distance, rotation angle in degrees)`` between two OpenCV world-to-camera poses.

    Camera centres (``C = -R^T t``) make the translation error independent of the camera's orientation.
    """
    R_est, R_gt = np.asarray(R_est, dtype=np.float64), np.asarray(R_gt, dtype=np.float64)
    centre_est = -R_est.T @ np.asarray(t_est, dtype=np.float64).reshape(3)
    centre_gt = -R_gt.T @ np.asarray(t_gt, dtype=np.float64).reshape(3)
    return float(np.linalg.norm(centre_est - centre_gt)), rotation_angle_deg(R_est @ R_gt.T)


def c2w_pose_errors(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> Tuple[float, float]:
    """``pose_errors`` for two OpenGL camera-to-world poses (same frame, e.g. both original)."""
    return pose_errors(*opengl_c2w_to_opencv_w2c(c2w_est), *opengl_c2w_to_opencv_w2c(c2w_gt))
