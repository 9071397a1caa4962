"""Calibrating "localized": which of the index path's figures separate right poses from wrong ones.

Step 1 (``collect``) localizes query folders with ground truth with the confidence check switched off and writes, per
query, the pose error and every figure the method reports (``Localization.diagnostics``). Step 2 (``report``) reads
such files and, per figure, prints the range over right poses (within 2 deg and 2% of the scene) and over wrong ones
(beyond 5 deg or 5%), and the threshold that rejects every wrong pose while keeping most right ones; then, per
scene, how many right poses the matcher's floors (``--matcher.verify.*``, ns-localize's defaults) keep and how many wrong
ones they still report. Thresholds are chosen on the bundled scene and fern only (the calibration split); held-out
scenes are for reporting.

    python -m benchmarks.confidence collect --load-config RUN/config.yml --query-dirs Q1 Q2 --output O.csv
    python -m benchmarks.confidence report O1.csv O2.csv
    python -m benchmarks.confidence summary O1.csv O2.csv   # per folder: medians, recall, seconds, floors
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

from crossfire_ns.io.atomic import write_csv_atomic
from crossfire_ns.localize.matchers import CrossfireMatcherConfig

CONSOLE = Console(width=140)

RIGHT = (2.0, 0.02)
"""A right pose: rotation within 2 deg and camera centre within 2% of the scene's camera extent."""
LOWER_IS_BETTER = ("_deg", "_sigma")
"""Figures (by name ending) where smaller means surer: angles between estimates, uncertainties."""
_TEXT = ("scene", "folder", "file_path", "status", "patch_failed")
"""Columns of a collected row that are not figures (``patch_failed`` says why the patch rounds' pose was not taken)."""


def _figures(row: Dict[str, str]) -> Dict[str, float]:
    """A collected row's figures as numbers (text columns and empty cells left out)."""
    return {k: float(v) for k, v in row.items() if k not in _TEXT and v not in (None, "")}


def confirmed(row: Dict[str, str], matcher: CrossfireMatcherConfig) -> bool:
    """Whether ``matcher``'s floors (``verify.verdict``, as ns-localize applies them) confirm the pose of a collected
    row; a row without a pose is not confirmed, and a pose whose figures are missing is an error, never a floor off."""
    from crossfire_ns.localize.verify import Evidence, verdict

    if row["status"] != "localized":
        return False
    return verdict(Evidence.from_figures(_figures(row)), matcher.verify).confirmed


WRONG = (5.0, 0.05)
"""A wrong pose: rotation beyond 5 deg or camera centre beyond 5% of the extent."""


@dataclass
class Collect:
    """Localize query folders (with ground truth) and write each query's error and figures."""

    load_config: Path
    """config.yml of the map."""
    query_dirs: List[Path]
    """Query folders with transforms.json (ground truth)."""
    output: Path
    """CSV to write (one row per query)."""
    label: str = ""
    """Scene label written in every row (default: the map's experiment folder)."""
    matcher: CrossfireMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """The localizer's settings (ns-localize's defaults); every pose found is reported here
    (``verify.report_unconfirmed``: ``summary`` applies the floors to the recorded figures), while the floors still
    decide which queries go on to further retrieved views, as in ns-localize. Pass
    ``--matcher.verify.diagnostic-figures True`` to record the figures no floor reads."""

    def main(self) -> None:
        from crossfire_ns.geometry import c2w_pose_errors
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        extent = crossfire_map.camera_extent()
        matcher = replace(self.matcher, verify=replace(self.matcher.verify, report_unconfirmed=True))
        localizer = MapLocalizer(crossfire_map, matcher)
        localizer.warm_up()
        rows = []
        for query_dir in self.query_dirs:
            queries, _ = load_query_set(query_dir)
            for q in queries:
                answer = localizer.localize(read_query_image(q), K=q.K)
                t_err, r_err = c2w_pose_errors(answer.c2w, q.c2w_gt) if answer.localized else (np.inf, np.inf)
                rows.append(
                    {
                        "scene": self.label or self.load_config.parent.parent.parent.name,
                        "folder": query_dir.name,
                        "file_path": q.file_path,
                        "status": answer.status,
                        "r_err": r_err,
                        "t_rel": t_err / extent,
                        "seconds": answer.seconds,
                        "reprojection_error_px": answer.reprojection_error_px,
                        **answer.diagnostics,
                    }
                )
                CONSOLE.print(f"{query_dir.name}/{q.file_path}: {answer.status} r={r_err:.3f} {answer.diagnostics}")
        names = list(dict.fromkeys(k for row in rows for k in row))
        write_csv_atomic(self.output, rows, fieldnames=names)


@dataclass
class Report:
    """Per figure: its range over right and wrong poses, and the threshold that rejects every wrong one."""

    files: tyro.conf.Positional[List[Path]] = field(default_factory=list)
    """CSV files written by ``collect``."""
    matcher: CrossfireMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """Whose confidence floors are applied to the recorded figures, per scene (ns-localize's defaults)."""

    def main(self) -> Dict:
        rows = [row for f in self.files for row in csv.DictReader(open(f))]
        rows = [r for r in rows if r["status"] == "localized"]
        self.floors(rows)
        r_err = np.array([float(r["r_err"]) for r in rows])
        t_rel = np.array([float(r["t_rel"]) for r in rows])
        right = (r_err <= RIGHT[0]) & (t_rel <= RIGHT[1])
        wrong = (r_err > WRONG[0]) | (t_rel > WRONG[1])
        CONSOLE.print(f"{len(rows)} localized: {int(right.sum())} right, {int(wrong.sum())} wrong, rest in between")
        table = Table(title="Figures of right vs wrong poses (higher is better for all but *_deg and *_sigma)")
        for col in ("figure", "right min", "right median", "wrong max", "wrong median", "threshold", "right kept"):
            table.add_column(col)
        out = {}
        skip = {*_TEXT, "r_err", "t_rel", "seconds"}
        for name in [k for k in rows[0] if k not in skip] if rows else []:
            values = np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows])
            sign = -1.0 if name.endswith(LOWER_IS_BETTER) else 1.0
            v = sign * values
            good, bad = v[right & np.isfinite(v)], v[wrong & np.isfinite(v)]
            threshold = float(np.max(bad)) if len(bad) else float("-inf")
            kept = float(np.mean(good > threshold)) if len(good) else float("nan")
            out[name] = {"threshold": sign * threshold, "right_kept": kept}
            table.add_row(
                name, f"{sign * (good.min() if len(good) else np.nan):.3g}", f"{sign * np.median(good):.3g}" if len(good) else "-",
                f"{sign * (bad.max() if len(bad) else np.nan):.3g}", f"{sign * np.median(bad):.3g}" if len(bad) else "-",
                f"{sign * threshold:.3g}", f"{kept:.0%}",
            )  # fmt: skip
        CONSOLE.print(table)
        return out

    def floors(self, rows: List[dict]) -> Dict[str, Dict[str, int]]:
        """Per scene, how many right poses the floors keep and how many wrong ones they still report."""
        table = Table(title="With the floors applied (--matcher.verify.*)")
        for col in ("scene", "found", "right", "right kept", "wrong", "wrong reported", "beyond 5 deg reported"):
            table.add_column(col)
        counts: Dict[str, Dict[str, int]] = {}
        for row in rows:
            diagnostics = _figures(row)
            r_err, t_rel = diagnostics["r_err"], diagnostics["t_rel"]
            kept = confirmed(row, self.matcher)
            right = r_err <= RIGHT[0] and t_rel <= RIGHT[1]
            wrong = r_err > WRONG[0] or t_rel > WRONG[1]
            c = counts.setdefault(
                row["scene"], dict.fromkeys(("found", "right", "kept", "wrong", "reported", "deg"), 0)
            )
            c["found"] += 1
            c["right"] += right
            c["kept"] += right and kept
            c["wrong"] += wrong
            c["reported"] += wrong and kept
            c["deg"] += r_err > WRONG[0] and kept
        for scene, c in counts.items():
            table.add_row(scene, *(str(c[k]) for k in ("found", "right", "kept", "wrong", "reported", "deg")))
        CONSOLE.print(table)
        return counts


@dataclass
class Summary:
    """Per file and query folder: median rotation and translation (failures infinitely far), how many within
    1 deg / 1% and 2 deg / 2%, median seconds per query (and queries per second), and with the floors applied how
    many right poses stay reported and how many wrong ones (beyond 5 deg or 5%) are still reported."""

    files: tyro.conf.Positional[List[Path]] = field(default_factory=list)
    """CSV files written by ``collect``."""
    matcher: CrossfireMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """Whose confidence floors are applied to the recorded figures (ns-localize's defaults)."""

    def main(self) -> List[Dict]:
        table = Table(title="Per folder (failures count as infinitely far; floors: ns-localize's defaults)")
        for col in ("file", "folder", "n", "median deg", "median t %", "1 deg/1%", "2 deg/2%", "median s",
                    "queries/s", "right kept", "wrong reported"):  # fmt: skip
            table.add_column(col)
        out = []
        for path in self.files:
            rows = list(csv.DictReader(open(path)))
            for folder in [*dict.fromkeys(r["folder"] for r in rows), "all"]:
                rs = [r for r in rows if folder == "all" or r["folder"] == folder]
                found = [r["status"] == "localized" for r in rs]
                r_err = np.array([float(r["r_err"]) if ok else np.inf for r, ok in zip(rs, found)])
                t_rel = np.array([float(r["t_rel"]) if ok else np.inf for r, ok in zip(rs, found)])
                seconds = float(np.median([float(r["seconds"]) for r in rs]))
                kept = np.zeros(len(rs), dtype=bool)
                for i, r in enumerate(rs):
                    kept[i] = found[i] and confirmed(r, self.matcher)
                right = (r_err <= RIGHT[0]) & (t_rel <= RIGHT[1])
                wrong = (r_err > WRONG[0]) | (t_rel > WRONG[1])
                line = {
                    "file": path.name, "folder": folder, "n": len(rs), "median_deg": float(np.median(r_err)),
                    "median_t": float(np.median(t_rel)), "within_1": int(((r_err <= 1) & (t_rel <= 0.01)).sum()),
                    "within_2": int(right.sum()), "seconds": seconds, "right_kept": int((right & kept).sum()),
                    "wrong_reported": int((wrong & kept & np.array(found)).sum()),
                }  # fmt: skip
                out.append(line)
                table.add_row(
                    line["file"], folder, str(len(rs)), f"{line['median_deg']:.3f}", f"{100 * line['median_t']:.2f}",
                    str(line["within_1"]), str(line["within_2"]), f"{seconds:.2f}", f"{1 / seconds:.2f}",
                    str(line["right_kept"]), str(line["wrong_reported"]),
                )  # fmt: skip
        CONSOLE.print(table)
        return out


def entrypoint() -> None:
    tyro.extras.subcommand_cli_from_dict({"collect": Collect, "report": Report, "summary": Summary}).main()


if __name__ == "__main__":
    entrypoint()
