"""Writing localization results: atomic JSON/CSV, a nerfstudio-format poses file, an error plot, a console table.

Every file is written to a temporary file in the destination folder and moved into place with ``os.replace``,
so an interrupted run never leaves a truncated file and an existing file survives a failed rewrite.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from crossfire_ns.localize.queries import FISHEYE_MODELS, QueryImage
from crossfire_ns.localize.results import QueryResult

PathLike = Union[str, Path]
ResultLike = Union[QueryResult, Mapping[str, Any]]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success it replaces ``path``, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """numpy arrays/scalars, Paths and dataclass-like records -> plain JSON types; NaN and inf -> None."""
    if isinstance(obj, QueryResult):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON (see ``to_jsonable``) atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(to_jsonable(obj), handle, indent=indent, allow_nan=False)
        handle.write("\n")


def _csv_value(value: Any) -> Any:
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def write_csv_atomic(
    path: PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Optional[Sequence[str]] = None
) -> None:
    """Write dict rows as CSV atomically; columns are ``fieldnames`` or the keys in order of first appearance."""
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in fieldnames})


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
    not localized; ``status``, ``num_inliers``, ``seconds`` etc. are extra per-frame keys. Intrinsics come from
    the matching ``queries`` (by ``file_path``); set ``K``/``width``/``height`` on them first to record defaults
    the localizer used.
    """
    by_path = {q.file_path: q for q in queries or []}
    frames = []
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


def read_poses_json(path: PathLike) -> Dict[str, np.ndarray]:
    """``file_path -> 4x4 c2w`` of the frames with a matrix in a transforms-format file (e.g. ``write_poses_json``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    poses = {}
    for frame in data.get("frames", []):
        matrix = frame.get("transform_matrix")
        if matrix is None:
            continue
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"{path}: frame {frame.get('file_path')!r} has a transform_matrix of shape {matrix.shape}")
        c2w = np.eye(4)
        c2w[: matrix.shape[0]] = matrix
        poses[frame["file_path"]] = c2w
    return poses


def _cdf(errors: List[float], total: int) -> Tuple[np.ndarray, np.ndarray]:
    """Step-plot coordinates of the fraction of ``total`` queries with error <= x."""
    xs = np.sort(np.asarray(errors, dtype=np.float64))
    ys = np.arange(1, len(xs) + 1) / max(total, 1)
    return np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys])


def plot_errors(path: PathLike, results: Iterable[ResultLike], thresholds: Sequence[Tuple[float, float]] = ()) -> None:
    """Cumulative distributions of translation and rotation errors (two panels), saved atomically.

    The y axis is the fraction of all queries with ground truth, so failed queries keep the curve below 1 and
    the plateau reads as the recall. ``thresholds`` are drawn as vertical lines; the x axis stops at 1.5x the
    95th-percentile error (or the largest threshold) so that a few gross errors do not squash the curve.
    """
    items = [QueryResult.from_any(r) for r in results]
    total = sum(1 for r in items if r.has_gt or r.t_err is not None)
    evaluated = [r for r in items if r.status == "localized" and r.t_err is not None and r.r_err is not None]
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    panels = figure.subplots(1, 2)
    specs = [
        (panels[0], [float(r.t_err) for r in evaluated], "translation error (scene units)", [t for t, _ in thresholds]),
        (panels[1], [float(r.r_err) for r in evaluated], "rotation error (degrees)", [a for _, a in thresholds]),
    ]
    for axis, errors, label, marks in specs:
        if total == 0:
            axis.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=axis.transAxes)
        else:
            xs, ys = _cdf(errors, total)
            axis.step(xs, ys, where="post", color="tab:blue")
            for mark in marks:
                axis.axvline(mark, color="tab:gray", linestyle="--", linewidth=0.8)
            upper = max([float(np.percentile(errors, 95)) if errors else 0.0] + list(marks)) * 1.5
            if upper > 0:  # a few gross errors would squash the informative part of the curve
                axis.set_xlim(0, upper)
        axis.set_xlabel(label)
        axis.set_ylabel("fraction of queries")
        axis.set_ylim(0, 1.02)
        axis.grid(True, alpha=0.3)
    figure.suptitle(f"{len(evaluated)} localized of {total} queries with ground truth")
    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format=suffix, dpi=120)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


_STATUS_STYLE = {"localized": "green", "failed": "yellow", "unreadable": "red"}


def print_results_table(
    results: Iterable[ResultLike],
    summary: Mapping[str, Any],
    console: Optional[Console] = None,
    max_rows: Optional[int] = 50,
) -> None:
    """Per-query table (first ``max_rows``) and a summary table on the console."""
    console = console or Console()
    items = [QueryResult.from_any(r) for r in results]
    table = Table(title="Queries", show_lines=False)
    for name, justify in [
        ("query", "left"),
        ("status", "left"),
        ("inliers", "right"),
        ("matches", "right"),
        ("reproj px", "right"),
        ("t err", "right"),
        ("r err deg", "right"),
        ("s", "right"),
        ("message", "left"),
    ]:
        table.add_column(name, justify=justify, overflow="fold")
    shown = items if max_rows is None else items[:max_rows]
    for r in shown:
        table.add_row(
            r.file_path,
            f"[{_STATUS_STYLE[r.status]}]{r.status}[/]",
            str(r.num_inliers),
            str(r.num_matches),
            _fmt(r.reprojection_error_px),
            _fmt(r.t_err),
            _fmt(r.r_err),
            f"{r.seconds:.2f}",
            r.message,
        )
    if len(shown) < len(items):
        table.caption = f"... {len(items) - len(shown)} more queries in the CSV/JSON outputs"
    console.print(table)

    overview = Table(title="Summary", show_header=False)
    overview.add_column("metric")
    overview.add_column("value", justify="right")
    overview.add_row(
        "queries (localized / failed / unreadable)",
        f"{summary.get('num_queries', 0)} ({summary.get('num_localized', 0)} / {summary.get('num_failed', 0)} / "
        f"{summary.get('num_unreadable', 0)})",
    )
    overview.add_row("with ground truth", str(summary.get("num_with_gt", 0)))
    overview.add_row(
        "median / mean translation error",
        f"{_fmt(summary.get('median_translation_error'))} / {_fmt(summary.get('mean_translation_error'))}",
    )
    overview.add_row(
        "median / mean rotation error (deg)",
        f"{_fmt(summary.get('median_rotation_error_deg'))} / {_fmt(summary.get('mean_rotation_error_deg'))}",
    )
    for entry in summary.get("recall", []):
        recall = entry.get("recall")
        overview.add_row(
            f"recall @ {_fmt(entry['translation'])}, {_fmt(entry['rotation_deg'])} deg",
            "-" if recall is None else f"{100 * recall:.1f}%",
        )
    overview.add_row(
        "seconds per query (median / mean)",
        f"{_fmt(summary.get('median_seconds'))} / {_fmt(summary.get('mean_seconds'))}",
    )
    console.print(overview)
