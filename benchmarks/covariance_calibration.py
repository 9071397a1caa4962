"""Whether the pose covariance can be trusted: localize query folders with ground truth and count how often the true
pose lies inside the 50%, 90% and 99% ellipsoids of the reported covariance (chi-square with 6 degrees of freedom),
and which scale factor of the covariance would make those shares match their levels.

    python -m benchmarks.covariance_calibration collect --output cal.json --jobs MAP/config.yml=QUERY_DIR ...
    python -m benchmarks.covariance_calibration leave-one-out --output loo.json --maps MAP/config.yml ...
    python -m benchmarks.covariance_calibration fit cal.json [--leave-one-out loo.json]   # on the calibration split
    python -m benchmarks.covariance_calibration report held-out.json [--leave-one-out loo.json] [--widening first-order]

``collect`` writes one record per query (status, the error vector to the truth in the covariance's order and frame,
``d2 = e^T C^-1 e`` under the first-order covariance, its standard deviations, the inliers' number and mean
reprojection error, the matcher's figures, the map's leave-one-out records) and prints the report. ``leave-one-out``
writes each map's training views localized without their own cells (``MapLocalizer.leave_one_out``), for records
collected without them. ``report`` reads records back with the covariance widened as the API widens it
(``crossfire_ns.localize.pnp.CALIBRATED``), or first order, times ``--scale``. ``fit`` chooses the widening's scale,
knee, exponent, map exponent and map floor from records: robust least squares of ``log(d2 / 5.348)`` (5.348: the
median of chi-square(6)) on the log of the factor, then the scale that puts half the records inside the 50% ellipsoid.
The report also gives the extra scale each level would need alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table
from scipy.optimize import least_squares

from crossfire_ns.io.atomic import write_json_atomic
from crossfire_ns.localize.pnp import CALIBRATED, CHI2_6_MEDIAN, FIRST_ORDER, CovarianceWidening, mahalanobis_squared

CONSOLE = Console(width=170)

CHI2_6 = {0.5: CHI2_6_MEDIAN, 0.9: 10.644641, 0.99: 16.811894}
"""Quantiles of chi-square with 6 degrees of freedom: the squared Mahalanobis radius of each ellipsoid."""


def calibration(d2: Sequence[float], scale: float = 1.0) -> Dict[str, float]:
    """Shares of ``d2`` (squared Mahalanobis distances under the covariance, before ``scale``) inside each
    ellipsoid once the covariance is multiplied by ``scale``, and the scale factors that would calibrate them: one for
    the median (``scale_50``) and one per level."""
    values = np.asarray(d2, dtype=np.float64) / scale
    out: Dict[str, float] = {"count": int(len(values))}
    if not len(values):
        return out
    for level, quantile in CHI2_6.items():
        out[f"inside_{round(100 * level)}"] = float(np.mean(values <= quantile))
        out[f"scale_{round(100 * level)}"] = float(np.quantile(values, level) / quantile * scale)
    return out


@dataclass
class Collect:
    """Localize each MAP=QUERY_DIR job (ns-localize's defaults) and record each query's error against its covariance."""

    output: Path
    jobs: List[str] = field(default_factory=list)
    """MAP_CONFIG=QUERY_DIR pairs (query folders with transforms.json and ground truth)."""
    max_queries: int = 0
    """> 0: at most this many queries per folder (a short run)."""

    def main(self) -> None:
        from crossfire_ns.geometry import c2w_pose_errors, pose_error_vector
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer

        rows = []
        localizers: Dict[str, MapLocalizer] = {}
        leave_one_out: Dict[str, list] = {}
        for job in self.jobs:
            config, query_dir = job.split("=", 1)
            if config not in localizers:
                localizers[config] = MapLocalizer.load(config, covariance_widening=FIRST_ORDER)
                localizers[config].warm_up()
                leave_one_out[config] = localizers[config].leave_one_out()
            localizer = localizers[config]
            try:
                queries = [q for q in load_query_set(Path(query_dir))[0] if q.c2w_gt is not None]
            except (OSError, ValueError) as err:  # an empty or missing folder: said, and the others go on
                CONSOLE.print(f"[yellow]{query_dir}: skipped ({err})")
                continue
            for q in queries[: self.max_queries or None]:
                a = localizer.localize(read_query_image(q), K=q.K)
                row = {"map": config, "dir": query_dir, "file": q.file_path, "status": a.status, "seconds": a.seconds}
                row["set"] = "/".join(Path(query_dir).parts[-2:])
                if a.localized and a.covariance is not None:
                    error = pose_error_vector(a.c2w, q.c2w_gt)
                    t_err, r_err = c2w_pose_errors(a.c2w, q.c2w_gt)
                    row.update(
                        error=error.tolist(),
                        d2=mahalanobis_squared(error, a.covariance),
                        sigma_rotation_deg=np.degrees(np.sqrt(np.diag(a.covariance)[:3])).tolist(),
                        sigma_centre=np.sqrt(np.diag(a.covariance)[3:]).tolist(),
                        t_err=t_err,
                        r_err=r_err,
                        num_inliers=a.num_inliers,
                        covariance=a.covariance.tolist(),
                        map_scale=localizer.map.scale,
                        leave_one_out=[list(r) for r in leave_one_out[config]],
                        reprojection_error_px=a.reprojection_error_px,
                        diagnostics={k: v for k, v in a.diagnostics.items() if isinstance(v, (int, float, str))},
                    )
                rows.append(row)
                CONSOLE.print(f"{query_dir} {q.file_path}: {a.status} d2={row.get('d2', float('nan')):.3g}")
        write_json_atomic(self.output, rows)
        Report(files=[self.output]).main()


def widening_factor(row: dict, widening: CovarianceWidening) -> float:
    """The factor ``widening`` puts on a record's first-order covariance (a record collected before the inliers'
    error, or its map's leave-one-out, was recorded can only be reported without them)."""
    if widening == FIRST_ORDER:
        return 1.0
    if row.get("reprojection_error_px") is None:
        raise ValueError(f"{row['dir']} {row['file']}: the record lacks reprojection_error_px; collect it again")
    ratio = float("nan")
    if widening.map_exponent:
        if "leave_one_out" not in row:
            raise ValueError(f"{row['map']}: the record lacks its map's leave_one_out; give --leave-one-out")
        ratio = widening.leave_one_out_ratio(row["leave_one_out"])
    return widening.factor(row["reprojection_error_px"], ratio)


def with_leave_one_out(rows: List[dict], files: Sequence[Path]) -> List[dict]:
    """``rows`` with each map's leave-one-out records (``leave-one-out`` files: map -> records) where they lack it."""
    known: Dict[str, list] = {}
    for path in files:
        known.update(json.loads(Path(path).read_text()))
    return [dict(row, leave_one_out=known[row["map"]]) if row["map"] in known and "leave_one_out" not in row else row
            for row in rows]  # fmt: skip


MAP_FLOORS = (0.0, 0.5, 1.0, 2.0)
"""The map floors ``fit`` chooses among (by the calibration error of the fitted records)."""


def fit_widening(rows: Sequence[dict], map_floor: Optional[float] = None) -> CovarianceWidening:
    """The widening (scale, knee, exponent and, when every record carries its map's leave-one-out, the map exponent)
    that best explains the records' first-order ``d2``: robust least squares of ``log(d2 / 5.348)`` on the log of the
    factor, then the scale that calibrates the median. The map ratio depends on the knee and exponent: refitted with
    the previous fit's ratios until the fit settles. ``map_floor`` None: the one of ``MAP_FLOORS`` whose fit puts the
    levels' shares nearest to them."""
    known = [row for row in rows if "d2" in row and row.get("reprojection_error_px") is not None]
    if len(known) < 10:
        raise ValueError(f"{len(known)} localized records with an error figure: too few to fit a widening (10 or more)")
    with_map = all("leave_one_out" in row for row in known)
    if with_map and map_floor is None:
        fits = [fit_widening(known, floor) for floor in MAP_FLOORS]
        return min(fits, key=lambda widening: calibration_error(known, widening))
    error = np.array([row["reprojection_error_px"] for row in known], dtype=np.float64)
    target = np.log(np.array([row["d2"] for row in known]) / CHI2_6[0.5])
    maps = [row.get("map") for row in known]
    records = {row["map"]: row["leave_one_out"] for row in known} if with_map else {}

    def widening(params: np.ndarray) -> CovarianceWidening:  # log scale, log knee, exponent[, map exponent]
        return CovarianceWidening(
            scale=float(np.exp(params[0])), knee_px=float(np.exp(params[1])), error_exponent=float(params[2]),
            map_exponent=float(params[3]) if with_map else 0.0, map_floor=map_floor or 0.0,
        )  # fmt: skip

    params = np.array([1.0, np.log(0.5), 2.0] + ([1.0] if with_map else []))
    for _ in range(8):
        ratios = {name: widening(params).leave_one_out_ratio(r) for name, r in records.items()}
        ratio = np.array([ratios.get(name, np.nan) for name in maps])

        def log_factor(p: np.ndarray, ratio: np.ndarray = ratio) -> np.ndarray:
            w = widening(p)
            return np.log([w.factor(e, r) for e, r in zip(error, ratio)])

        fitted = least_squares(lambda p: log_factor(p) - target, params, loss="soft_l1").x
        fitted[0] += np.median(target - log_factor(fitted))
        settled = np.allclose(fitted, params, atol=1e-3)
        params = fitted
        if settled or not with_map:
            break
    return widening(params)


def calibration_error(rows: Sequence[dict], widening: CovarianceWidening) -> float:
    """Sum over the 50, 90 and 99% levels of how far the share of ``rows`` inside each ellipsoid is from the level."""
    result = calibration([row["d2"] / widening_factor(row, widening) for row in rows])
    return sum(abs(result[f"inside_{round(100 * level)}"] - level) for level in CHI2_6)


@dataclass
class Fit:
    """Choose the widening on records (the calibration split) and report each set under it."""

    files: tyro.conf.Positional[List[Path]] = field(default_factory=list)
    leave_one_out: List[Path] = field(default_factory=list)
    """Maps' leave-one-out records (``leave-one-out``) for records collected without them."""
    map_term: bool = True
    """Fit the map's leave-one-out term too (needs every record's)."""

    def main(self) -> None:
        rows = with_leave_one_out(
            [row for path in self.files for row in json.loads(Path(path).read_text())], self.leave_one_out
        )
        if not self.map_term:
            rows = [{k: v for k, v in row.items() if k != "leave_one_out"} for row in rows]
        widening = fit_widening(rows)
        CONSOLE.print(f"fitted: {widening}\nin force: {CALIBRATED}")
        report_rows(rows, widening, 1.0, [], "fitted widening")


@dataclass
class Report:
    """Shares inside the 50/90/99% ellipsoids per query folder, per group and in all, and the calibrating scale."""

    files: tyro.conf.Positional[List[Path]] = field(default_factory=list)
    widening: Literal["calibrated", "first-order"] = "calibrated"
    """The API's widening of the covariance (``pnp.CALIBRATED``), or none."""
    scale: float = 1.0
    """Multiply every covariance by this too before counting."""
    groups: List[str] = field(default_factory=list)
    """NAME=DIR,DIR,... sets of query folders reported together (e.g. the calibration split)."""
    leave_one_out: List[Path] = field(default_factory=list)
    """Maps' leave-one-out records (``leave-one-out``) for records collected without them."""

    def main(self) -> None:
        rows = with_leave_one_out(
            [row for path in self.files for row in json.loads(Path(path).read_text())], self.leave_one_out
        )
        widening = CALIBRATED if self.widening == "calibrated" else FIRST_ORDER
        report_rows(rows, widening, self.scale, self.groups, f"{self.widening} widening x {self.scale:g}")


def report_rows(rows: List[dict], widening: CovarianceWidening, scale: float, groups: List[str], title: str) -> None:
    """Print, per set, per group and in all, the shares of true poses inside each ellipsoid of the covariances widened
    by ``widening`` and ``scale``, and the extra scale each level would need."""
    factors = [widening_factor(row, widening) * scale if "d2" in row else 1.0 for row in rows]
    rows = [dict(row, factor=f, d2=row["d2"] / f) if "d2" in row else row for row, f in zip(rows, factors)]
    sets: Dict[str, List[dict]] = {}
    for row in rows:
        sets.setdefault(row.get("set", row["dir"]), []).append(row)
    for group in groups:
        name, dirs = group.split("=", 1)
        sets[name] = [row for row in rows if row["dir"] in dirs.split(",")]
    sets["all"] = rows
    table = Table(title=f"Pose covariance calibration ({title})")
    for column in ("set", "queries", "with cov", "in 50%", "in 90%", "in 99%", "scale 50", "scale 90", "scale 99",
                   "sigma deg / centre", "error deg / centre"):  # fmt: skip
        table.add_column(column, justify="left" if column == "set" else "right", no_wrap=column == "set")
    for name, members in sets.items():
        known = [row for row in members if "d2" in row]
        if not known:
            table.add_row(name, str(len(members)), "0", *["-"] * 8)
            continue
        result = calibration([row["d2"] for row in known])
        shares = [f"{100 * result[f'inside_{p}']:.0f}%" for p in (50, 90, 99)]
        scales = [f"{result[f'scale_{p}']:.3g}" for p in (50, 90, 99)]
        sigma_rotation = np.median([np.linalg.norm(r["sigma_rotation_deg"]) * np.sqrt(r["factor"]) for r in known])
        sigma_centre = np.median([np.linalg.norm(r["sigma_centre"]) * np.sqrt(r["factor"]) for r in known])
        errors = f"{np.median([r['r_err'] for r in known]):.3g} / {np.median([r['t_err'] for r in known]):.3g}"
        table.add_row(
            name,
            str(len(members)),
            str(len(known)),
            *shares,
            *scales,
            f"{sigma_rotation:.3g} / {sigma_centre:.3g}",
            errors,
        )
    CONSOLE.print(table)


@dataclass
class LeaveOneOut:
    """Each map's training views localized without their own cells (``MapLocalizer.leave_one_out``, stored with the
    map index), as map -> [(first-order d2, mean reprojection error px), ...], for records collected without them."""

    output: Path
    maps: List[str] = field(default_factory=list)
    """Map config.yml paths, spelled as the records spell them."""

    def main(self) -> None:
        from crossfire_ns.localize.api import MapLocalizer

        out = {}
        for config in self.maps:
            records = MapLocalizer.load(config, covariance_widening=FIRST_ORDER).leave_one_out()
            out[config] = [list(r) for r in records]
            ratio = CALIBRATED.leave_one_out_ratio(records)
            CONSOLE.print(f"{config}: {len(records)} views localized, ratio {ratio:.3g}")
        write_json_atomic(self.output, out)


def entrypoint() -> None:
    tyro.extras.subcommand_cli_from_dict(
        {"collect": Collect, "leave-one-out": LeaveOneOut, "fit": Fit, "report": Report}
    ).main()


if __name__ == "__main__":
    entrypoint()
