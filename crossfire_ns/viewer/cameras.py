"""The cameras of an ``ns-localize`` run as frustums for the viewer: poses.json (+ optional queries) -> markers.

``poses.json`` holds camera-to-world matrices (OpenGL) in the training data's *original* frame, one frame per
query with its ``status``; the viewer shows nerfstudio's normalised frame (dataparser transform and scale, times
viser's scale ratio). The query folder, when known, adds each query's thumbnail and its ground-truth pose.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union

import numpy as np

from crossfire_ns.geometry import original_to_normalized
from crossfire_ns.io.index_file import read_index_cameras
from crossfire_ns.io.queries import QueryImage
from crossfire_ns.io.transforms import read_poses_json

RGB = Tuple[int, int, int]

STATUS_COLORS: Dict[str, RGB] = {"localized": (40, 200, 80), "failed": (230, 60, 50), "unreadable": (150, 150, 150)}
"""Frustum colour of an estimate by its status (any other status is grey)."""
GROUND_TRUTH_COLOR: RGB = (70, 140, 255)
"""Frustum colour of a ground-truth pose whose query has an estimate."""
OTHER_STATUS_COLOR: RGB = (150, 150, 150)
VIRTUAL_VIEW_COLOR: RGB = (190, 90, 255)
"""Frustum colour of the map index's virtual views (poses no training camera took, rendered into the index)."""


@dataclass
class CameraMarker:
    """One frustum to draw: an estimate or a ground-truth pose of a query, in the normalised (viewer) frame."""

    file_path: str
    """The query's key in poses.json."""
    kind: Literal["estimate", "ground_truth", "virtual"]
    status: str
    """The query's status in poses.json ("localized", "failed", ...)."""
    c2w: np.ndarray
    """4x4 camera-to-world, OpenGL, nerfstudio's normalised frame."""
    fov_y: float
    """Vertical field of view in radians."""
    aspect: float
    """Width over height."""
    color: RGB
    image_path: Optional[Path] = None
    """The query image, for a thumbnail on the frustum (estimates only); None when the query folder is unknown."""
    description: str = ""
    """One line for the user: status, inliers, errors."""


def status_color(status: str) -> RGB:
    return STATUS_COLORS.get(status, OTHER_STATUS_COLOR)


def _camera_shape(
    frame: Mapping[str, Any], query: Optional[QueryImage], default: Tuple[float, float]
) -> Tuple[float, float]:
    """(vertical fov in radians, aspect) from the frame's intrinsics, else the query's, else ``default``."""
    if all(isinstance(frame.get(k), (int, float)) and frame.get(k) for k in ("fl_y", "w", "h")):
        fy, width, height = float(frame["fl_y"]), float(frame["w"]), float(frame["h"])
        return 2.0 * math.atan(height / (2.0 * fy)), width / height
    if query is not None and query.K is not None and query.width and query.height:
        return 2.0 * math.atan(query.height / (2.0 * float(query.K[1, 1]))), query.width / query.height
    return default


def _describe(frame: Mapping[str, Any]) -> str:
    parts = [f"{frame.get('file_path')}: {frame.get('status', 'unknown')}"]
    if frame.get("num_inliers") is not None:
        parts.append(f"{frame['num_inliers']} inliers")
    if frame.get("translation_error") is not None and frame.get("rotation_error_deg") is not None:
        parts.append(f"error {frame['translation_error']:.3g} / {frame['rotation_error_deg']:.3g} deg")
    return ", ".join(parts)


def localized_cameras(
    poses_path: Union[str, Path],
    transform: np.ndarray,
    scale: float,
    queries: Optional[Mapping[str, QueryImage]] = None,
    default_camera: Tuple[float, float] = (math.radians(60.0), 4.0 / 3.0),
) -> List[CameraMarker]:
    """Markers for every query of a poses.json: its estimate (if any) coloured by status, its ground truth if known.

    ``transform``/``scale`` map the poses' frame to nerfstudio's normalised frame (see
    ``crossfire_ns.map.frame_normalization``). ``queries`` (``file_path -> QueryImage``, from
    ``load_query_set`` on the query folder) add thumbnails and ground truth. The ground truth of a query without an
    estimate takes that query's status colour (so failed queries show where they are), otherwise
    ``GROUND_TRUTH_COLOR``. ``default_camera`` is ``(vertical fov, aspect)`` for frames without intrinsics.
    Raises ``ValueError``/``KeyError``/``OSError`` on a missing or malformed file.
    """
    matrices = read_poses_json(poses_path)
    document = json.loads(Path(poses_path).read_text(encoding="utf-8"))
    frames = document.get("frames") if isinstance(document, dict) else None
    if not isinstance(frames, list):
        raise ValueError(f"{poses_path}: not a transforms-format file (no 'frames' list)")
    queries = queries or {}
    markers: List[CameraMarker] = []
    for frame in frames:
        file_path = frame.get("file_path")
        if not isinstance(file_path, str):
            raise ValueError(f"{poses_path}: a frame has no 'file_path'")
        query = queries.get(file_path)
        status = str(frame.get("status", "localized" if file_path in matrices else "unknown"))
        fov_y, aspect = _camera_shape(frame, query, default_camera)
        description = _describe(frame)
        estimate = matrices.get(file_path)
        if estimate is not None:
            markers.append(
                CameraMarker(
                    file_path=file_path,
                    kind="estimate",
                    status=status,
                    c2w=original_to_normalized(estimate, transform, scale),
                    fov_y=fov_y,
                    aspect=aspect,
                    color=status_color(status),
                    image_path=None if query is None else query.path,
                    description=description,
                )
            )
        if query is not None and query.c2w_gt is not None:
            markers.append(
                CameraMarker(
                    file_path=file_path,
                    kind="ground_truth",
                    status=status,
                    c2w=original_to_normalized(query.c2w_gt, transform, scale),
                    fov_y=fov_y,
                    aspect=aspect,
                    color=GROUND_TRUTH_COLOR if estimate is not None else status_color(status),
                    description=f"{description} (ground truth)",
                )
            )
    return markers


def viser_pose(c2w: np.ndarray, scale_ratio: float = 10.0) -> Tuple[np.ndarray, np.ndarray]:
    """``(wxyz, position)`` of a viser camera node for an OpenGL c2w in nerfstudio's frame.

    viser cameras look along +z with y down (OpenCV), and the nerfstudio viewer draws its world ``scale_ratio``
    times larger (``VISER_NERFSTUDIO_SCALE_RATIO``); this is what nerfstudio does for the training cameras.
    """
    import viser.transforms as vtf

    c2w = np.asarray(c2w, dtype=np.float64)
    rotation = vtf.SO3.from_matrix(c2w[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
    return np.asarray(rotation.wxyz), c2w[:3, 3] * scale_ratio


def error_segments(markers: List[CameraMarker]) -> List[Tuple[str, np.ndarray, np.ndarray]]:
    """``(file_path, estimate centre, ground-truth centre)`` for each query with both, normalised frame."""
    estimates = {m.file_path: m for m in markers if m.kind == "estimate"}
    return [
        (m.file_path, estimates[m.file_path].c2w[:3, 3], m.c2w[:3, 3])
        for m in markers
        if m.kind == "ground_truth" and m.file_path in estimates
    ]


def load_thumbnail(path: Path, height: int = 100) -> Optional[np.ndarray]:
    """(h, w, 3) uint8 image resized to ``height`` rows, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            width = max(1, round(image.width * height / image.height))
            return np.asarray(image.resize((width, height), Image.BILINEAR))
    except (OSError, ValueError):
        return None


def virtual_view_markers(index_path: Union[str, Path]) -> List[CameraMarker]:
    """The virtual views of the map index stored at ``index_path`` as frustums (``VIRTUAL_VIEW_COLOR``), in the
    normalised frame the index holds them in; none for an index without virtual views."""
    cameras = read_index_cameras(Path(index_path))
    markers = []
    for number, view in enumerate(range(len(cameras.c2ws))[cameras.virtual]):
        width, height = (float(x) for x in cameras.sizes[view])
        fy = float(cameras.Ks[view][1, 1])
        markers.append(
            CameraMarker(
                f"virtual_{number:04d}", "virtual", "virtual", np.asarray(cameras.c2ws[view], dtype=np.float64),
                2.0 * math.atan(height / (2.0 * fy)), width / height, VIRTUAL_VIEW_COLOR,
                description=f"virtual view {number}",
            )
        )  # fmt: skip
    return markers
