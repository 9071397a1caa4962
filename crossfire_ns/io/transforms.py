"""nerfstudio transforms-format files: reading and writing poses (``frames[].transform_matrix``).

Poses in these files are camera-to-world, OpenGL axes, in the frame of the file (for queries and localization
results: the training data's original frame). Query folders are read by ``crossfire_ns.io.queries``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from crossfire_ns.geometry import pose_matrix
from crossfire_ns.io.atomic import PathLike, write_json_atomic
from crossfire_ns.io.queries import FISHEYE_MODELS, QueryImage
from crossfire_ns.results import QueryResult

ResultLike = Union[QueryResult, Mapping[str, Any]]


def write_transforms(path: PathLike, frames: Sequence[Mapping[str, Any]], **keys: Any) -> Path:
    """A transforms.json with global ``keys`` (intrinsics, camera_model, ...) and ``frames``, written atomically."""
    write_json_atomic(path, {**keys, "frames": list(frames)})
    return Path(path)


def read_poses_json(path: PathLike) -> Dict[str, np.ndarray]:
    """``file_path -> 4x4 c2w`` of the frames with a matrix in a transforms-format file (e.g. ``write_poses_json``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    poses = {}
    for frame in data.get("frames", []):
        matrix = frame.get("transform_matrix")
        if matrix is None:
            continue
        poses[frame["file_path"]] = pose_matrix(matrix, f"{path}: frame {frame.get('file_path')!r}")
    return poses


def intrinsics_frame_fields(query: QueryImage) -> Dict[str, Any]:
    """nerfstudio transforms.json camera keys (fl_x, ..., distortion, camera_model) of a query, where known."""
    fields: Dict[str, Any] = {}
    if query.K is not None:
        K = np.asarray(query.K, dtype=np.float64)
        fields.update(fl_x=float(K[0, 0]), fl_y=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]))
    if query.width is not None and query.height is not None:
        fields.update(w=int(query.width), h=int(query.height))
    if query.dist_coeffs is not None:
        d = [float(x) for x in np.asarray(query.dist_coeffs).reshape(-1)]
        if query.camera_model in FISHEYE_MODELS:
            fields.update(k1=d[0], k2=d[1], k3=d[2], k4=d[3])
        else:
            fields.update(k1=d[0], k2=d[1], p1=d[2], p2=d[3], k3=d[4] if len(d) > 4 else 0.0)
    if fields:
        fields["camera_model"] = query.camera_model
    return fields


def write_poses_json(
    path: PathLike,
    results: Iterable[ResultLike],
    queries: Optional[Sequence[QueryImage]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Estimated poses in nerfstudio's transforms.json format, one frame per query, in the query set's order.

    ``transform_matrix`` is the estimated camera-to-world (OpenGL, original frame) or null when the query was
    not localized; ``status``, ``num_inliers``, ``covariance`` (6x6, ``QueryResult.covariance``), ``seconds`` etc. are
    extra per-frame keys. Intrinsics come from the matching ``queries`` (by ``file_path``); set ``K``/``width``/
    ``height`` on them first to record defaults the localizer used.
    """
    by_path = {q.file_path: q for q in queries or []}
    frames: List[Dict[str, Any]] = []
    for item in results:
        r = QueryResult.from_any(item)
        frame: Dict[str, Any] = {"file_path": r.file_path}
        if r.file_path in by_path:
            frame.update(intrinsics_frame_fields(by_path[r.file_path]))
        frame.update(
            transform_matrix=r.c2w if r.status == "localized" else None,
            status=r.status,
            num_inliers=r.num_inliers,
            num_matches=r.num_matches,
            reprojection_error_px=r.reprojection_error_px,
            covariance=r.covariance if r.status == "localized" else None,
            seconds=r.seconds,
            translation_error=r.t_err,
            rotation_error_deg=r.r_err,
            message=r.message,
        )
        frames.append(frame)
    document: Dict[str, Any] = {}
    if metadata:
        document["metadata"] = dict(metadata)
    document["frames"] = frames
    write_json_atomic(path, document)
