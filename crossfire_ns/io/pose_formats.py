"""Pose files other tools read: hloc's results format and TUM trajectories.

* hloc / COLMAP (``name qw qx qy qz tx ty tz``): world-to-camera in COLMAP's convention (OpenCV camera axes: x
  right, y down, z forward; ``x_cam = R(q) x_world + t``), in the training data's original frame.
* TUM (``timestamp tx ty tz qx qy qz qw``): the camera's pose in the world (camera-to-world), OpenCV camera axes,
  original frame; what ``evo_ape tum`` reads.

Quaternions come from scipy's ``Rotation`` (scalar last in scipy; reordered here per format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
from scipy.spatial.transform import Rotation

from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w, opengl_c2w_to_opencv_w2c, opengl_to_opencv_c2w
from crossfire_ns.io.atomic import PathLike, atomic_open
from crossfire_ns.results import QueryResult

RIGID_TOLERANCE = 1e-3
"""Largest deviation of a pose's rotation from orthonormal (and of its determinant from 1) accepted as rigid."""
QUATERNION_TOLERANCE = 1e-2
"""Largest deviation of a pose file's quaternion norm from 1 (more is a wrong field order, not rounding)."""


def check_rigid(c2w: np.ndarray, where: str) -> np.ndarray:
    """``c2w`` as a 4x4 float64 if it is a finite rigid transform (orthonormal rotation with determinant +1, last row
    0 0 0 1); ``ValueError`` naming ``where`` otherwise: a scaled or sheared prior would be used as a camera pose."""
    matrix = np.asarray(c2w, dtype=np.float64)
    if matrix.shape == (3, 4):
        matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise ValueError(f"{where}: a pose must be a finite 4x4 (or 3x4) matrix, got shape {matrix.shape}")
    rotation = np.clip(matrix[:3, :3], -2.0, 2.0)  # a rotation's entries are within [-1, 1]: no overflow below
    off = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    det = float(np.linalg.det(rotation))
    if off > RIGID_TOLERANCE or abs(det - 1.0) > RIGID_TOLERANCE:
        raise ValueError(
            f"{where}: the rotation part is not a rotation (|R^T R - I| = {off:.3g}, det = {det:.6g}); a pose must "
            f"be rigid: orthonormal axes, no scale, no mirror"
        )
    if np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0]).max() > RIGID_TOLERANCE:
        raise ValueError(f"{where}: the last row of a pose must be 0 0 0 1, got {matrix[3].tolist()}")
    matrix[3] = [0.0, 0.0, 0.0, 1.0]
    return matrix


def _unit_quaternion(quaternion: np.ndarray, where: str) -> np.ndarray:
    norm = float(np.linalg.norm(quaternion))
    if abs(norm - 1.0) > QUATERNION_TOLERANCE:
        raise ValueError(
            f"{where}: the quaternion {quaternion.tolist()} has norm {norm:.6g}, not 1 (is the field order right?)"
        )
    return quaternion / norm


def c2w_to_colmap(c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenGL camera-to-world (4x4) -> COLMAP ``(qvec (w, x, y, z), tvec)`` world-to-camera."""
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return np.array([w, x, y, z]), np.asarray(t, dtype=np.float64)


def colmap_to_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """COLMAP ``(qvec (w, x, y, z), tvec)`` world-to-camera -> OpenGL camera-to-world (4x4)."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64)
    return opencv_w2c_to_opengl_c2w(Rotation.from_quat([x, y, z, w]).as_matrix(), tvec)


def c2w_to_tum(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world -> TUM ``(tx, ty, tz, qx, qy, qz, qw)`` (camera pose, OpenCV camera axes)."""
    pose = opengl_to_opencv_c2w(c2w)
    return np.concatenate([pose[:3, 3], Rotation.from_matrix(pose[:3, :3]).as_quat()])


def tum_to_c2w(values: np.ndarray) -> np.ndarray:
    """TUM ``(tx, ty, tz, qx, qy, qz, qw)`` -> OpenGL camera-to-world (4x4)."""
    values = np.asarray(values, dtype=np.float64)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(values[3:7]).as_matrix()
    pose[:3, 3] = values[:3]
    return opengl_to_opencv_c2w(pose)  # flipping y and z is its own inverse


def _localized(results: Iterable[QueryResult]) -> List[QueryResult]:
    return [r for r in results if r.status == "localized" and r.c2w is not None]


def write_hloc_results(path: PathLike, results: Iterable[QueryResult]) -> None:
    """hloc's localization results: one ``name qw qx qy qz tx ty tz`` line per localized query."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for result in _localized(results):
            qvec, tvec = c2w_to_colmap(result.c2w)
            handle.write(" ".join([result.file_path, *(f"{v:.10g}" for v in (*qvec, *tvec))]) + "\n")


def read_hloc_poses(path: PathLike) -> Dict[str, np.ndarray]:
    """``name -> 4x4 OpenGL c2w`` from an hloc results / COLMAP-style pose list (``#`` comments, blank lines
    skipped); ``ValueError`` naming the line for anything else: a wrong field count, a value that is not a finite
    number, a quaternion that is not unit, a name listed twice."""
    poses: Dict[str, np.ndarray] = {}
    lines: Dict[str, int] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        where = f"{path}:{number}"
        if len(parts) != 8:
            raise ValueError(f"{where}: expected 'name qw qx qy qz tx ty tz', got {len(parts)} fields")
        try:
            values = np.array([float(v) for v in parts[1:]])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        if not np.isfinite(values).all():
            raise ValueError(f"{where}: every value must be a finite number, got {' '.join(parts[1:])}")
        if parts[0] in lines:
            raise ValueError(f"{where}: {parts[0]!r} is listed twice (also line {lines[parts[0]]}); keep one pose")
        lines[parts[0]] = number
        pose = colmap_to_c2w(_unit_quaternion(values[:4], where), values[4:])
        if not np.isfinite(pose).all():
            raise ValueError(f"{where}: the camera centre of this pose overflows (translation {values[4:].tolist()})")
        poses[parts[0]] = pose
    return poses


def write_tum_trajectory(path: PathLike, results: Iterable[QueryResult], timestamps: Iterable[float]) -> None:
    """A TUM trajectory of the localized queries: ``timestamp tx ty tz qx qy qz qw`` per line."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for result, stamp in zip(results, timestamps):
            if result.status == "localized" and result.c2w is not None:
                handle.write(" ".join(f"{v:.10g}" for v in (stamp, *c2w_to_tum(result.c2w))) + "\n")


def read_tum_trajectory(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``(timestamps (N,), c2w (N, 4, 4) OpenGL)`` of a TUM trajectory file; ``ValueError`` for a row that is not
    eight finite numbers with a unit quaternion."""
    rows = np.loadtxt(path, comments="#", ndmin=2)
    if not len(rows):
        return np.zeros(0), np.zeros((0, 4, 4))
    if rows.shape[1] != 8:
        raise ValueError(f"{path}: expected 'timestamp tx ty tz qx qy qz qw' rows, got {rows.shape[1]} columns")
    poses = []
    for index, row in enumerate(rows):
        if not np.isfinite(row).all():
            raise ValueError(f"{path}: row {index + 1}: every value must be a finite number, got {row.tolist()}")
        quaternion = _unit_quaternion(row[4:8], f"{path}: row {index + 1}")
        poses.append(tum_to_c2w(np.concatenate([row[1:4], quaternion])))
    return rows[:, 0], np.stack(poses)
