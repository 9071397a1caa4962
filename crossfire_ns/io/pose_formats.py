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
    skipped); ``ValueError`` naming the line for anything else."""
    poses: Dict[str, np.ndarray] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 8:
            raise ValueError(f"{path}:{number}: expected 'name qw qx qy qz tx ty tz', got {len(parts)} fields")
        try:
            values = np.array([float(v) for v in parts[1:]])
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from err
        poses[parts[0]] = colmap_to_c2w(values[:4], values[4:])
    return poses


def write_tum_trajectory(path: PathLike, results: Iterable[QueryResult], timestamps: Iterable[float]) -> None:
    """A TUM trajectory of the localized queries: ``timestamp tx ty tz qx qy qz qw`` per line."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for result, stamp in zip(results, timestamps):
            if result.status == "localized" and result.c2w is not None:
                handle.write(" ".join(f"{v:.10g}" for v in (stamp, *c2w_to_tum(result.c2w))) + "\n")


def read_tum_trajectory(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """``(timestamps (N,), c2w (N, 4, 4) OpenGL)`` of a TUM trajectory file."""
    rows = np.loadtxt(path, comments="#", ndmin=2)
    return rows[:, 0], np.stack([tum_to_c2w(row[1:]) for row in rows]) if len(rows) else np.zeros((0, 4, 4))
