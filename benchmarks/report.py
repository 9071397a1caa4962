"""Step: turn the per-job outputs into the benchmark table (CSV + markdown), error CDF plots, and the
BENCHMARKS.md section between the ``bench-table`` markers. Pure functions; the files are written atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from crossfire_ns.io.atomic import atomic_open, write_csv_atomic

SECTION_HEADING = "## Relocalization benchmark (benchmarks.run)"

COLUMNS = (
    "scene", "condition", "method", "status", "num_queries", "num_localized",
    "median_translation_error", "median_translation_error_pct", "median_rotation_error_deg",
    "median_translation_error_all", "median_rotation_error_deg_all",
    "recall_1", "recall_2", "recall_5", "confidently_wrong", "num_confidently_wrong",
    "seconds_per_query", "median_seconds_retrieval", "median_seconds_coarse", "median_seconds_refine",
    "median_seconds_other", "median_renders", "map_seconds", "device", "scene_extent", "protocol", "message",
)  # fmt: skip
"""Columns of results.csv; recall_k is the recall at (k% of the scene extent, k degrees); ``_all`` medians are over
all queries with failures counted as infinite (``"inf"`` when half or more failed); ``confidently_wrong`` is the
share of queries reported localized but outside (5% of the extent, 5 deg); ``median_seconds_<stage>`` split the
seconds per query (retrieval, coarse, refine, other); ``protocol`` is ``relative`` (thresholds scale with the scene
extent) or ``metric`` (7-Scenes / Cambridge: the extent is 1 m, so recall_5 is recall at 5 cm / 5 deg)."""

PROTOCOLS = ("relative", "metric")
"""How a row's thresholds and units read: relative to the scene extent, or in metres (the published protocol)."""

SUMMARY_KEYS = (
    "median_translation_error_all", "median_rotation_error_deg_all", "confidently_wrong", "num_confidently_wrong",
    "median_seconds_retrieval", "median_seconds_coarse", "median_seconds_refine", "median_seconds_other",
    "median_renders",
)  # fmt: skip
"""Row columns copied from summary.json as they are."""

METHOD_LABELS = {
    "crossfire": "crossfire",
    "sift": "sift (vs renders)",
    "photometric": "photometric",
    "prior": "prior (retrieval)",
    "sfm-sift": "sfm-sift (pycolmap peer)",
    "sfm-sift-lowpeak": "sfm-sift-lowpeak (peer, low SIFT threshold)",
}


def _recall_at(summary: Mapping[str, Any], fraction: float, degrees: float) -> Optional[float]:
    for entry, relative in zip(summary.get("recall", []), summary.get("recall_thresholds_relative", [])):
        if math.isclose(relative[0], fraction) and math.isclose(relative[1], degrees):
            return entry.get("recall")
    return None


def summary_row(
    scene: str,
    condition: str,
    method: str,
    summary: Optional[Mapping[str, Any]],
    map_seconds: Optional[float],
    device: str,
    scene_extent: float,
    status: str = "ok",
    message: str = "",
    protocol: str = "relative",
) -> Dict[str, Any]:
    """One table row from a method's summary.json (None when the job failed: the row says so)."""
    row: Dict[str, Any] = {k: None for k in COLUMNS}
    row.update(scene=scene, condition=condition, method=method, status=status, message=message, protocol=protocol)
    row.update(map_seconds=map_seconds, device=device, scene_extent=scene_extent)
    if summary is None:
        row["status"] = "failed" if status == "ok" else status
        return row
    median_t = summary.get("median_translation_error")
    row.update(
        num_queries=summary.get("num_queries"),
        num_localized=summary.get("num_localized"),
        median_translation_error=median_t,
        median_translation_error_pct=None if median_t is None else 100.0 * median_t / scene_extent,
        median_rotation_error_deg=summary.get("median_rotation_error_deg"),
        recall_1=_recall_at(summary, 0.01, 1.0),
        recall_2=_recall_at(summary, 0.02, 2.0),
        recall_5=_recall_at(summary, 0.05, 5.0),
        seconds_per_query=summary.get("median_seconds"),
        **{key: summary.get(key) for key in SUMMARY_KEYS},
    )
    return row


def query_errors(results_csv: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query (translation, rotation) errors from a results.csv, ``inf`` for queries not localized
    (failed or unreadable), so that a CDF over them reads as recall."""
    t_errs, r_errs = [], []
    with open(results_csv, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            ok = row.get("status") == "localized" and row.get("t_err") not in ("", None)
            t_errs.append(float(row["t_err"]) if ok else math.inf)
            r_errs.append(float(row["r_err"]) if ok and row.get("r_err") not in ("", None) else math.inf)
    return np.array(t_errs, dtype=np.float64), np.array(r_errs, dtype=np.float64)


def _num(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _median_all(value: Any, scale: float = 1.0, digits: int = 3) -> str:
    """A median over all queries: ``inf`` when half or more failed, ``-`` when undefined."""
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "inf"
    return "-" if value is None else _num(scale * float(value), digits)


def _stages(row: Mapping[str, Any]) -> str:
    """``retrieval / coarse / refine / other`` seconds, or ``-`` for a method that reports no stages."""
    keys = ("median_seconds_retrieval", "median_seconds_coarse", "median_seconds_refine", "median_seconds_other")
    values = [row.get(k) for k in keys]
    if all(v is None for v in values) or not any(values[:3]):
        return "-"
    return " / ".join(_num(v, 2) for v in values)


def _wrong(row: Mapping[str, Any]) -> str:
    if row.get("confidently_wrong") is None:
        return "-"
    return f"{_pct(row['confidently_wrong'])} ({row.get('num_confidently_wrong') or 0})"


def _renders(row: Mapping[str, Any]) -> str:
    """Renders per query; "-" for the peers (no map to render), 0 for methods that render nothing per query."""
    value = row.get("median_renders")
    if value is None or _stages(row) == "-":  # a method without stage timing (the peers) has no map to render
        return "-"
    return _num(value) if value else "0"


_HEADERS = {
    "relative": (
        "scene", "condition", "method", "localized", "median translation error (% of extent)",
        "median rotation error (deg)", "median over all queries, failures inf (% / deg)", "recall 1% / 1 deg",
        "recall 2% / 2 deg", "recall 5% / 5 deg", "confidently wrong (> 5% or 5 deg)", "s / query",
        "s by stage: retrieval / coarse / refine / other", "renders / query", "map time (s)", "device",
    ),
    "metric": (
        "scene", "condition", "method", "localized", "median translation error (cm)", "median rotation error (deg)",
        "median over all queries, failures inf (cm / deg)", "recall 5 cm / 5 deg", "confidently wrong (> 5 cm or 5 deg)",
        "s / query", "s by stage: retrieval / coarse / refine / other", "renders / query", "map time (s)", "device",
    ),
}  # fmt: skip
"""Table headers per protocol (relative: thresholds scale with the scene; metric: the published cm / deg)."""


def _cells(row: Mapping[str, Any], protocol: str) -> List[str]:
    """The cells of one row of the ``protocol`` table."""
    head = [str(row["scene"]), str(row["condition"]), METHOD_LABELS.get(row["method"], row["method"])]
    tail = [_num(row.get("map_seconds"), 4), str(row.get("device"))]
    width = len(_HEADERS[protocol])
    if row.get("status") != "ok" or row.get("num_queries") is None:
        message = str(row.get("message") or "no result").replace("|", "/").splitlines()[0][:90]
        return head + [f"failed: {message}"] + ["-"] * (width - len(head) - 1 - len(tail)) + tail
    timing = [_num(row.get("seconds_per_query")), _stages(row), _renders(row)]
    localized = f"{row['num_localized']}/{row['num_queries']}"
    median_t, rot = row.get("median_translation_error"), _num(row.get("median_rotation_error_deg"))
    all_r = _median_all(row.get("median_rotation_error_deg_all"))
    if protocol == "metric":  # the extent is 1 m: errors in metres, shown in cm
        t_text = "-" if median_t is None else _num(100.0 * median_t)
        all_text = f"{_median_all(row.get('median_translation_error_all'), 100.0)} / {all_r}"
        return head + [localized, t_text, rot, all_text, _pct(row.get("recall_5")), _wrong(row)] + timing + tail
    t_text = "-" if median_t is None else f"{_num(median_t)} ({_num(row['median_translation_error_pct'], 2)}%)"
    extent = float(row.get("scene_extent") or 1.0)
    all_text = f"{_median_all(row.get('median_translation_error_all'), 100.0 / extent, 2)}% / {all_r}"
    recalls = [_pct(row.get(k)) for k in ("recall_1", "recall_2", "recall_5")]
    return head + [localized, t_text, rot, all_text, *recalls, _wrong(row)] + timing + tail


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results as GitHub markdown, one row per (scene, condition, method): one table for the scenes whose
    thresholds scale with their extent, and one (if any) for the published metric protocol (cm / deg)."""
    tables = []
    for protocol in PROTOCOLS:
        chosen = [r for r in rows if (r.get("protocol") or "relative") == protocol]
        if not chosen and (rows or protocol != "relative"):  # no rows at all: the (empty) relative table
            continue
        header = _HEADERS[protocol]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(_cells(row, protocol)) + " |" for row in chosen]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


PEERS = ("sfm-sift", "sfm-sift-lowpeak")
"""The structure-based peers; the standing table compares crossfire with the better of them on each row."""


def _standing_cell(row: Optional[Mapping[str, Any]]) -> str:
    """``recall 2% / 2 deg, median rotation, wrong, s / query`` of one row (``failed`` or ``-``)."""
    if row is None:
        return "-"
    if row.get("status") != "ok" or row.get("num_queries") is None:
        return "failed"
    wrong = row.get("num_confidently_wrong") or 0
    return (
        f"{_pct(row.get('recall_2'))}, {_num(row.get('median_rotation_error_deg'))} deg"
        + (f", **{wrong} wrong**" if wrong else "")
        + f", {_num(row.get('seconds_per_query'), 2)} s"
    )


def standing_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per scene and condition: crossfire against the better peer (higher recall at 2% / 2 deg, then the
    lower median rotation): recall, median rotation over localized queries, confidently wrong poses reported (> 5% or
    5 deg), seconds per query; and crossfire's map time."""
    by_key: Dict[Tuple[str, str], Dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row["scene"], row["condition"]), {})[row["method"]] = row
    lines = [
        "| scene | condition | crossfire: recall 2% / 2 deg, median rotation, s / query | better peer: the same | map (s) |",
        "|---|---|---|---|---|",
    ]
    for (scene, condition), methods in by_key.items():
        crossfire = methods.get("crossfire")
        peers = [methods[p] for p in PEERS if p in methods and methods[p].get("status") == "ok"]
        best = max(
            peers,
            key=lambda r: (r.get("recall_2") or 0.0, -(r.get("median_rotation_error_deg") or float("inf"))),
            default=None,
        )
        name = "" if best is None else f" ({best['method']})"
        map_seconds = None if crossfire is None else crossfire.get("map_seconds")
        lines.append(
            f"| {scene} | {condition} | {_standing_cell(crossfire)} | {_standing_cell(best)}{name} | "
            f"{_num(map_seconds, 0) if map_seconds is not None else '-'} |"
        )
    return "\n".join(lines)


def write_tables(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> Tuple[Path, Path]:
    """``results.csv`` (every column) and ``results.md`` (the markdown table) in ``out_dir``."""
    out_dir = Path(out_dir)
    write_csv_atomic(out_dir / "results.csv", list(rows), fieldnames=COLUMNS)
    with atomic_open(out_dir / "results.md", "w", encoding="utf-8") as handle:
        handle.write(markdown_table(rows) + "\n")
    return out_dir / "results.csv", out_dir / "results.md"


Curves = Mapping[str, Mapping[Tuple[str, str], Tuple[np.ndarray, np.ndarray]]]
"""scene -> (method, condition) -> (translation errors as % of the scene extent, rotation errors in degrees)."""

_COLOURS = {
    "crossfire": "tab:red",
    "sift": "tab:blue",
    "photometric": "tab:green",
    "prior": "tab:gray",
    "sfm-sift": "black",
    "sfm-sift-lowpeak": "tab:purple",
}
_STYLES = ("-", "--", ":", "-.")


def _cdf(errors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Step coordinates of the fraction of all queries with error <= x (infinite errors never count)."""
    finite = np.sort(errors[np.isfinite(errors)])
    total = max(len(errors), 1)
    return finite, np.arange(1, len(finite) + 1) / total


def plot_error_cdfs(path: Path, curves: Curves, conditions: Sequence[str], methods: Sequence[str] = ()) -> Path:
    """One row of two panels per scene (translation as % of the scene extent, rotation in degrees, log x axes):
    the cumulative share of queries under each error, a colour per method, a line style per condition.
    Failed queries never count, so a curve's plateau is the method's recall."""
    scenes = list(curves)

    def _order(key: Tuple[str, str]):
        method, condition = key
        rank = list(methods).index(method) if method in methods else len(methods)
        return (rank, method, list(conditions).index(condition) if condition in conditions else len(conditions))

    figure = Figure(figsize=(11, 2.9 * max(len(scenes), 1) + 0.6), layout="constrained")
    axes = figure.subplots(max(len(scenes), 1), 2, squeeze=False)
    for row, scene in enumerate(scenes):
        for col, (label, lo, hi) in enumerate(
            (("translation error (% of scene extent)", 1e-2, 1e3), ("rotation error (deg)", 1e-2, 180.0))
        ):
            axis = axes[row][col]
            for (method, condition), errors in sorted(curves[scene].items(), key=lambda item: _order(item[0])):
                xs, ys = _cdf(np.asarray(errors[col], dtype=np.float64))
                style = _STYLES[list(conditions).index(condition) % len(_STYLES)] if condition in conditions else "-"
                xs = np.clip(np.concatenate([[lo], xs, [hi]]), lo, hi)
                ys = np.concatenate([[0.0], ys, [ys[-1] if len(ys) else 0.0]])
                axis.step(
                    xs, ys, where="post", linestyle=style, color=_COLOURS.get(method, "black"),
                    label=f"{METHOD_LABELS.get(method, method)}, {condition}",
                )  # fmt: skip
            for mark in (1.0, 2.0, 5.0):
                axis.axvline(mark, color="tab:gray", linewidth=0.6, alpha=0.5)
            axis.set_xscale("log")
            axis.set_xlim(lo, hi)
            axis.set_ylim(0, 1.02)
            axis.set_xlabel(label)
            axis.set_ylabel(f"{scene}: share of queries")
            axis.grid(True, alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8)
    figure.suptitle("Error CDFs (failed queries never count: the plateau is the recall)")
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    return Path(path)


def _median_inf(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else math.inf


def _recalls(row: Mapping[str, Any]) -> Tuple[float, float, float]:
    return tuple(float(row.get(k) or 0.0) for k in ("recall_1", "recall_2", "recall_5"))  # type: ignore[return-value]


def _describe(label: str, recalls: Tuple[float, float, float], rot: float) -> str:
    median = f"median rotation error {_num(rot)} deg" if math.isfinite(rot) else "most queries not localized"
    return f"{label} (recall {' / '.join(_pct(r) for r in recalls)}, {median})"


def crossfire_losses(
    rows: Sequence[Mapping[str, Any]], curves: Curves, failure_reasons: Mapping[Tuple[str, str], str]
) -> List[str]:
    """Markdown bullets: every (scene, condition) where a baseline beats crossfire, with the evidence.

    A baseline beats crossfire when its recalls at (1%, 1 deg), (2%, 2 deg) and (5%, 5 deg) are all at least
    crossfire's and one is higher; or when they are equal and not all zero, and its median rotation error over
    all queries (failures counted as infinite) is lower. A pose tens of degrees off does not beat an honest
    failure. ``failure_reasons`` maps (scene, condition) to crossfire's most common failure message, shown as a
    hint of why.
    """
    by_key = {(r["scene"], r["condition"], r["method"]): r for r in rows}
    empty = (np.zeros(0), np.zeros(0))
    bullets = []
    for (scene, condition, method), row in by_key.items():
        if method != "crossfire" or row.get("status") != "ok":
            continue
        own = _recalls(row)
        own_rot = _median_inf(curves.get(scene, {}).get(("crossfire", condition), empty)[1])
        winners = []
        for other in (m for (s, c, m) in by_key if s == scene and c == condition and m != "crossfire"):
            other_row = by_key[(scene, condition, other)]
            if other_row.get("status") != "ok":
                continue
            recalls = _recalls(other_row)
            rot = _median_inf(curves.get(scene, {}).get((other, condition), empty)[1])
            dominates = all(a >= b for a, b in zip(recalls, own)) and recalls != own
            closer = recalls == own and any(own) and rot < own_rot
            if dominates or closer:
                winners.append(_describe(METHOD_LABELS.get(other, other), recalls, rot))
        if not winners:
            continue
        hint = failure_reasons.get((scene, condition), "")
        bullets.append(
            f"- **{scene}, {condition}**: {_describe('crossfire', own, own_rot)} loses to " + ", ".join(winners) + "."
            + (f" Most common crossfire failure: \"{hint}\"." if hint else "")
        )  # fmt: skip
    return bullets


def markers(name: str = "bench-table") -> Tuple[str, str]:
    """The start and end markers of a generated section (``bench-table`` for the CPU figures)."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_marked_section(text: str, body: str, name: str = "bench-table", heading: str = SECTION_HEADING) -> str:
    """``text`` with everything between the ``name`` markers replaced by ``body``; without the markers, a new
    section (``heading`` + markers) is appended at the end."""
    mark_start, mark_end = markers(name)
    block = f"{mark_start}\n{body.strip()}\n{mark_end}"
    start, end = text.find(mark_start), text.find(mark_end)
    if start != -1 and end != -1 and end > start:
        return text[:start] + block + text[end + len(mark_end) :]
    if start != -1 or end != -1:
        raise ValueError(f"only one of the markers {mark_start} / {mark_end} is present; fix the file by hand")
    return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"


def update_markdown_file(path: Path, body: str, name: str = "bench-table", heading: str = SECTION_HEADING) -> None:
    """Rewrite the ``name`` section of a markdown file (atomically)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(replace_marked_section(text, body, name, heading))


def machine_lines(machine: Mapping[str, Any]) -> List[str]:
    """Human-readable lines describing the machine and versions (see ``benchmarks.machine``)."""
    gpu = machine.get("gpu") or "no GPU"
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    return [
        f"**Machine:** {machine.get('cpu_count')} CPU cores ({machine.get('cpu_model')}), "
        f"{machine.get('memory_gb', 0):.0f} GB RAM, {gpu}; torch threads {machine.get('torch_threads')}.",
        f"**Versions:** {versions}.",
        f"**Code:** commit {machine.get('commit')}; run {machine.get('date')}.",
    ]


def iter_rows(
    rows: Iterable[Mapping[str, Any]], scenes: Sequence[str], conditions: Sequence[str], methods: Sequence[str]
):
    """Rows sorted by scene, condition, method (in the given orders)."""

    def order(row):
        def index(seq, value):
            return list(seq).index(value) if value in seq else len(seq)

        return (index(scenes, row["scene"]), index(conditions, row["condition"]), index(methods, row["method"]))

    return sorted(rows, key=order)
