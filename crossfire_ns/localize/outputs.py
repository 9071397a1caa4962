"""Writing a localization run: poses.json, results.csv, summary.json, the error plot, overlays, a console table.

Every file goes through ``crossfire_ns.io.atomic``, so an interrupted run never leaves a truncated file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from crossfire_ns.io.atomic import PathLike, atomic_open, write_csv_atomic, write_json_atomic, write_png_atomic
from crossfire_ns.io.pose_formats import write_hloc_results, write_tum_trajectory
from crossfire_ns.io.queries import QueryImage
from crossfire_ns.io.transforms import ResultLike, write_poses_json
from crossfire_ns.results import QueryResult

OUTPUT_FILES = ("poses.json", "results.csv", "summary.json", "errors.png", "results_hloc.txt", "trajectory_tum.txt")
"""What ``write_outputs`` writes into the output folder."""

RESULT_COLUMNS = tuple(QueryResult.__dataclass_fields__)
"""Columns of results.csv: every field of ``QueryResult`` (``c2w`` as JSON), so a run can be resumed from it."""


def write_outputs(
    output_dir: PathLike,
    results: Sequence[QueryResult],
    queries: Sequence[QueryImage],
    summary: Mapping[str, Any],
    thresholds: Sequence[Tuple[float, float]] = (),
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """poses.json (with ``metadata``), results.csv (one row per query), summary.json, errors.png, hloc's
    results_hloc.txt and a TUM trajectory_tum.txt (timestamps: the queries' order)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_poses_json(out / "poses.json", results, queries, metadata=metadata)
    write_csv_atomic(out / "results.csv", [result.to_dict() for result in results], fieldnames=RESULT_COLUMNS)
    write_json_atomic(out / "summary.json", summary)
    plot_errors(out / "errors.png", results, thresholds)
    write_hloc_results(out / "results_hloc.txt", results)
    write_tum_trajectory(out / "trajectory_tum.txt", results, timestamps=range(len(results)))


def write_overlay(path: PathLike, image: np.ndarray, render: np.ndarray) -> None:
    """The query (H, W, 3 uint8) beside the map rendered at its estimate, as one PNG."""
    write_png_atomic(path, np.concatenate([image, render], axis=1))


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
