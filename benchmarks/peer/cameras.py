"""Cameras and poses for pycolmap: nerfstudio/transforms.json conventions in, COLMAP conventions out.

Pixel coordinates need no conversion: nerfstudio and COLMAP both put the centre of the first pixel at
(0.5, 0.5). Poses do: transforms.json holds OpenGL camera-to-world, COLMAP wants OpenCV world-to-camera
(``cam_from_world``), which is what ``crossfire_ns.geometry`` converts.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w, opengl_c2w_to_opencv_w2c


def colmap_camera(K: np.ndarray, width: int, height: int, dist: Optional[np.ndarray] = None, fisheye: bool = False):
    """A pycolmap camera: PINHOLE without distortion, OPENCV (k1, k2, p1, p2), FULL_OPENCV with k3, or
    OPENCV_FISHEYE. ``dist`` is in OpenCV order, as ``QueryImage.dist_coeffs`` holds it."""
    import pycolmap

    K = np.asarray(K, dtype=np.float64)
    params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    d = None if dist is None else [float(x) for x in np.asarray(dist).reshape(-1)]
    if fisheye:
        model, params = "OPENCV_FISHEYE", params + (d or [0.0] * 4)[:4]
    elif d is None or not any(d):
        model = "PINHOLE"
    elif len(d) > 4 and d[4] != 0.0:
        model, params = "FULL_OPENCV", params + d[:5] + [0.0, 0.0, 0.0]
    else:
        model, params = "OPENCV", params + d[:4]
    return pycolmap.Camera(model=model, width=int(width), height=int(height), params=params)


def cam_from_world(c2w_opengl: np.ndarray):
    """pycolmap ``Rigid3d`` (OpenCV world-to-camera) of an OpenGL camera-to-world pose."""
    import pycolmap

    R, t = opengl_c2w_to_opencv_w2c(c2w_opengl)
    return pycolmap.Rigid3d(np.hstack([R, t.reshape(3, 1)]))


def rigid_to_c2w(rigid) -> np.ndarray:
    """OpenGL camera-to-world (4x4) of a pycolmap ``Rigid3d`` world-to-camera pose."""
    R, t = rigid_to_rt(rigid)
    return opencv_w2c_to_opengl_c2w(R, t)


def rigid_to_rt(rigid) -> Tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` of a pycolmap ``Rigid3d``."""
    matrix = np.asarray(rigid.matrix(), dtype=np.float64)
    return matrix[:, :3], matrix[:, 3]
