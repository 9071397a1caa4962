"""Relocalization benchmark: crossfire against its baselines and a structure-based peer, on four scenes, under
the original and changed lighting. One command:

    python -m benchmarks.run --mode quick      # hours on 2 CPU cores today (benchmarks/modes.py); rewrites BENCHMARKS.md
    python -m benchmarks.run --mode full       # hours on a CPU
    python -m benchmarks.run --mode smoke      # a few minutes: checks the harness end to end

For each scene: prepare the training and query folders (``scenes``), write the lighting-changed queries
(``lighting``), train one map with ``ns-train`` (``train``), run every method on every condition (``localize``:
ns-localize's matchers on that map, and the pycolmap peer in ``peer``), then gather the table, the error CDFs
and the BENCHMARKS.md section (``report``). Finished maps and jobs are reused when their settings match, so
re-running after a crash or an interruption only does what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import tyro
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import report
from benchmarks.lighting import CONDITIONS, DEFAULT_SEED, relight_folder
from benchmarks.localize import ALL_METHODS, MAP_METHODS, PEER_VARIANTS, LocalizeJob, run_jobs
from benchmarks.modes import MODES, ModeSettings
from benchmarks.scenes import (
    DATASET_PREFIXES,
    DEFAULT_SCENES,
    SCENE_FAMILIES,
    SCENE_NAMES,
    PreparedScene,
    expand_scenes,
    prepare_scene,
)
from benchmarks.train import TrainResult, TrainSpec, last_train_step, log_tail, map_dir, train_map
from crossfire_ns.io.atomic import write_json_atomic

CONSOLE = Console()

GENERATED_CONDITIONS = ("relit", "novel-view")
"""Conditions only the generated scenes have (their own renders, not a change of the original queries)."""
REPO = Path(__file__).resolve().parents[1]


def _default_data_root() -> Path:
    candidates = [REPO.parent / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("CROSSFIRE_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["CROSSFIRE_SHARED_DATA"]))
    return next((c for c in candidates if c.is_dir()), candidates[0])


@dataclass
class BenchmarkRun:
    """Accuracy and speed of crossfire against sift, photometric, the prior alone and a pycolmap SfM peer."""

    mode: Literal["smoke", "quick", "full"] = "quick"
    """Size of everything (see benchmarks/modes.py): smoke checks the harness, quick (budget in benchmarks/modes.py) is the one to read on
    2 CPU cores, full is the larger run."""
    output_dir: Optional[Path] = None
    """Where scenes, maps, results and plots go (default: outputs/bench/<mode>, git-ignored)."""
    scenes: Optional[Tuple[str, ...]] = None
    """Scenes to run (default: the mode's; smoke and quick: synthetic, heldout-room, heldout-orbit, fox, fern, lego;
    full: synthetic, the whole held-out family, fox, fern, lego): synthetic, fox, fern, lego, the held-out family
    synthetic-heldout (benchmarks/scenes.py's HELDOUT_SCENES, heldout-room, heldout-orbit, ...; each can be named),
    and 7scenes:PATH / cambridge:PATH (a dataset folder, run with the published protocol: median cm / deg, recall at
    5 cm / 5 deg)."""
    methods: Optional[Tuple[str, ...]] = None
    """Methods (default: the mode's): crossfire, sift, photometric, prior (ns-localize on the map), sfm-sift and
    sfm-sift-lowpeak (the structure-based peers: COLMAP SIFT, and SIFT with a quarter of its peak threshold)."""
    conditions: Optional[Tuple[str, ...]] = None
    """Query conditions (default: the mode's). Photometric: original, lighting, dark, bright, gamma, cast,
    noise (benchmarks/lighting.py); relit: the generated scenes' own relit queries; novel-view: the generated scenes'
    queries from viewpoints no training camera took."""
    num_queries: Optional[int] = None
    """Queries per scene (default: the mode's)."""
    iterations: Optional[int] = None
    """Training iterations per map (default: the mode's)."""
    method: str = "crossfire-lite"
    """ns-train method of the maps (crossfire on a GPU)."""
    seed: Optional[int] = None
    """ns-train's --machine.seed for every map (default: nerfstudio's, 42); one map is not a measurement, so run
    seeds into separate output folders and compare."""
    train_args: str = ""
    """More ns-train arguments for every map, as one string (an option under test, e.g.
    ``--train-args="--pipeline.datamanager.pixel-sampler.max-window-pixels 9600"``); they are part of the maps'
    settings, so such maps never stand in for the defaults'."""
    device_type: Literal["auto", "cpu", "cuda"] = "auto"
    """Device for training and localization: auto uses CUDA when torch sees a GPU; rows are labelled with it."""
    data_root: Path = _default_data_root()
    """The shared data sets (ingp_fox, llff_fern, nerf_synthetic_lego)."""
    isolate: bool = False
    """Run every ns-localize job as its own command (slower start-up, full isolation)."""
    retrain: bool = False
    """Train the maps again even if finished ones with the same settings exist."""
    rerun: bool = False
    """Run the localization jobs again even if finished ones with the same settings exist."""
    torch_threads: Optional[int] = None
    """Threads of every training and localization process (OMP_NUM_THREADS); default: torch's (one per core).
    1 is much faster when another job shares the CPU (two threads then wait on each other), but the
    timings are then not those of an idle machine."""
    step_timeout_min: Optional[float] = None
    """Stop a training run or a scene's localization worker after this many minutes (recorded as failed)."""
    update_benchmarks_md: Optional[bool] = None
    """Rewrite the generated section of BENCHMARKS.md (default: yes for quick and full, no for smoke)."""
    benchmarks_md: Path = REPO / "BENCHMARKS.md"
    """The markdown file whose bench-table section is rewritten."""
    figure_dir: Path = REPO / "benchmarks" / "figures"
    """Where the error-CDF figure linked from BENCHMARKS.md is copied."""

    def settings(self) -> ModeSettings:
        settings = MODES[self.mode]
        if self.num_queries is not None:
            settings = replace(settings, sizes=replace(settings.sizes, num_queries=self.num_queries))
        if self.iterations is not None:
            settings = replace(settings, iterations=self.iterations)
        if self.conditions is not None:
            settings = replace(settings, conditions=tuple(self.conditions))
        if self.num_queries is not None:  # one number for every scene
            settings = replace(settings, sizes=replace(settings.sizes, scene_num_queries=()))
        return settings

    def seed_args(self) -> Tuple[str, ...]:
        """ns-train arguments that set the maps' seed (none without ``--seed``: earlier maps stay reusable)."""
        return () if self.seed is None else ("--machine.seed", str(self.seed))

    def extra_train_args(self) -> Tuple[str, ...]:
        """``--train-args`` split as a shell would, then ``seed_args``."""
        return (*shlex.split(self.train_args), *self.seed_args())

    def method_list(self) -> Tuple[str, ...]:
        """The methods to run: ``--methods``, else the mode's, else all."""
        return tuple(self.methods or MODES[self.mode].methods or ALL_METHODS)

    def requested_scenes(self) -> Tuple[str, ...]:
        """The scene names asked for: ``--scenes``, else the mode's, else ``DEFAULT_SCENES`` (families unexpanded)."""
        if self.scenes is not None:
            return tuple(self.scenes)
        return tuple(MODES[self.mode].scenes or DEFAULT_SCENES)

    def scene_list(self) -> Tuple[str, ...]:
        """``requested_scenes`` with families expanded."""
        return tuple(expand_scenes(self.requested_scenes()))

    def main(self) -> int:
        return run_benchmark(self)


@dataclass
class SceneOutcome:
    """What happened to one scene, for the report."""

    name: str
    prepared: Optional[PreparedScene] = None
    train: Optional[TrainResult] = None
    jobs: Tuple[LocalizeJob, ...] = ()
    error: str = ""
    seconds: Dict[str, float] = field(default_factory=dict)
    """Wall seconds of each step (prepare, train, localize)."""


def scene_label(name: str) -> str:
    """The folder and table name of a scene entry (``7scenes:PATH`` -> ``7scenes-<folder>``)."""
    if name.partition(":")[0] in DATASET_PREFIXES and ":" in name:
        from benchmarks.datasets import dataset_label

        return dataset_label(name)
    return name


def _validate(run: BenchmarkRun, settings: ModeSettings) -> None:
    unknown = []
    for scene in run.requested_scenes():
        try:
            expand_scenes([scene])
        except ValueError:
            unknown.append(scene)
    unknown += [m for m in run.method_list() if m not in ALL_METHODS]
    unknown += [c for c in settings.conditions if c not in CONDITIONS and c not in GENERATED_CONDITIONS]
    if unknown:
        raise SystemExit(
            f"unknown scene/method/condition: {', '.join(unknown)}. Scenes: {', '.join([*SCENE_NAMES, *SCENE_FAMILIES])}, "
            f"7scenes:PATH, cambridge:PATH; methods: "
            f"{', '.join(ALL_METHODS)}; conditions: {', '.join([*CONDITIONS, *GENERATED_CONDITIONS])}."
        )


def _query_dirs(prepared: PreparedScene, conditions, scene_dir: Path) -> Dict[str, Path]:
    """Query folder per condition; photometric ones are written (once) from the original queries."""
    folders: Dict[str, Path] = {}
    for condition in conditions:
        if condition == "original":
            folders[condition] = prepared.query_dir
        elif condition in prepared.extra_conditions:
            folders[condition] = prepared.extra_conditions[condition]
        elif condition in CONDITIONS:
            target = scene_dir / f"query-{condition}"
            meta = target / "transforms.json"
            source = prepared.query_dir / "transforms.json"
            stale = not meta.is_file() or meta.stat().st_mtime < source.stat().st_mtime
            if not stale:
                written = json.loads(meta.read_text())
                stale = written.get("photometric_change") != asdict(CONDITIONS[condition]) or written.get(
                    "photometric_seed"
                ) != int(DEFAULT_SEED)
            if stale:
                relight_folder(prepared.query_dir, target, CONDITIONS[condition], DEFAULT_SEED)
            folders[condition] = target
    return folders


def _device(run: BenchmarkRun) -> Tuple[str, str]:
    """(ns-train device type, label for the table)."""
    from benchmarks.machine import cuda_device

    gpu = cuda_device() if run.device_type in ("auto", "cuda") else None
    if run.device_type == "cuda" and gpu is None:
        raise SystemExit("--device-type cuda, but torch sees no CUDA device")
    threads = f", {run.torch_threads} torch thread{'s' if run.torch_threads != 1 else ''}" if run.torch_threads else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return ("cuda", f"cuda ({gpu})") if gpu else ("cpu", f"cpu ({cores} cores{threads})")


def run_scene(
    run: BenchmarkRun, settings: ModeSettings, name: str, out: Path, device: Tuple[str, str], progress, task
) -> SceneOutcome:
    entry, name = name, scene_label(name)
    outcome = SceneOutcome(name)
    scene_dir = out / "scenes" / name
    timeout = None if run.step_timeout_min is None else 60.0 * run.step_timeout_min
    start = time.perf_counter()
    progress.update(task, description=f"{name}: preparing the scene")
    try:
        prepared = prepare_scene(
            entry, scene_dir, run.data_root, settings.sizes, with_relit="relit" in settings.conditions,
            with_novel="novel-view" in settings.conditions,
        )  # fmt: skip
        query_dirs = _query_dirs(prepared, settings.conditions, scene_dir)
    except Exception as err:  # noqa: BLE001  a missing data set must not stop the other scenes
        outcome.error = f"scene preparation failed: {type(err).__name__}: {err}"
        CONSOLE.print(f"[red]{name}: {outcome.error}")
        return outcome
    outcome.prepared = prepared
    outcome.seconds["prepare"] = time.perf_counter() - start
    CONSOLE.print(
        f"[bold]{name}[/]: {prepared.num_train} training views of {prepared.image_size[0]}x{prepared.image_size[1]}, "
        f"{prepared.num_queries} queries, conditions {', '.join(query_dirs)}, extent {prepared.scene_extent:.3g}"
    )
    map_methods = [m for m in run.method_list() if m in MAP_METHODS]
    spec = TrainSpec(
        scene=name,
        data=prepared.train_dir,
        method=run.method,
        iterations=settings.iterations,
        device_type=device[0],
        extra_args=(*settings.train_args, *run.extra_train_args(), *prepared.train_args),
    )
    if map_methods:
        what = f"{name}: ns-train {run.method}"
        progress.update(task, description=f"{what}, {settings.iterations} iterations")
        start = time.perf_counter()
        log = map_dir(spec, out / "maps").parent / f"{spec.key()}.train.log"

        def show_step() -> None:
            step = last_train_step(log)
            if step is not None:
                progress.update(task, description=f"{what}: step {step}/{settings.iterations}")

        outcome.train = train_map(spec, out / "maps", retrain=run.retrain, timeout_s=timeout, poll=show_step)
        outcome.seconds["train"] = time.perf_counter() - start
        if outcome.train.config is None:
            CONSOLE.print(f"[red]{name}: map training failed ({outcome.train.message})\n{log_tail(outcome.train.log)}")
        else:
            how = "reused" if outcome.train.cached else "trained"
            CONSOLE.print(f"{name}: map {how} ({outcome.train.seconds:.0f} s of training): {outcome.train.config}")
    jobs: List[LocalizeJob] = []
    for condition, query_dir in query_dirs.items():
        for method in run.method_list():
            if method in MAP_METHODS and (outcome.train is None or outcome.train.config is None):
                continue
            jobs.append(
                LocalizeJob(
                    scene=name,
                    condition=condition,
                    method=method,
                    query_dir=query_dir,
                    output_dir=out / "localization" / name / condition / method,
                    scene_extent=prepared.scene_extent,
                    load_config=None if method in PEER_VARIANTS else outcome.train.config,
                    train_dir=prepared.train_dir if method in PEER_VARIANTS else None,
                    map_key=spec.key() if method not in PEER_VARIANTS else "",
                    matcher_options=settings.matcher_options.get(method, ()),
                )
            )
    if run.rerun:
        for job in jobs:
            (Path(job.output_dir) / "job.json").unlink(missing_ok=True)
    outcome.jobs = tuple(jobs)
    finished: List[LocalizeJob] = []

    def job_done(job: LocalizeJob) -> None:
        finished.append(job)
        progress.update(task, description=f"{name}: localizing, {len(finished)}/{len(jobs)} jobs done")

    progress.update(task, description=f"{name}: localizing, 0/{len(jobs)} jobs done")
    start = time.perf_counter()
    log = out / "localization" / name / "localize.log"
    run_jobs(jobs, log, isolate=run.isolate, on_done=job_done, timeout_s=timeout)
    outcome.seconds["localize"] = time.perf_counter() - start
    failed = [f"{j.condition}/{j.method}: {j.status()[1]}" for j in jobs if j.status()[0] != "ok"]
    for line in failed:
        CONSOLE.print(f"[red]{name}: {line}")
    return outcome


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _failure_reason(results_csv: Path) -> str:
    """The most common message of crossfire's failed queries (numbers stripped, so similar ones group)."""
    import csv
    import re

    if not results_csv.is_file():
        return ""
    with open(results_csv, newline="", encoding="utf-8") as handle:
        messages = [row.get("message", "") for row in csv.DictReader(handle) if row.get("status") != "localized"]
    if not messages:
        return ""
    common, count = Counter(re.sub(r"\d+(\.\d+)?", "N", m) for m in messages).most_common(1)[0]
    example = next(m for m in messages if re.sub(r"\d+(\.\d+)?", "N", m) == common)
    return f"{example} ({count} of {len(messages)} failures)"


def gather(outcomes: List[SceneOutcome], device_label: str):
    """Rows, error curves and crossfire's failure reasons from the jobs' outputs."""
    rows, curves, reasons = [], {}, {}
    for outcome in outcomes:
        if outcome.prepared is None:
            rows.append(report.summary_row(outcome.name, "-", "-", None, None, "-", 1.0, "failed", outcome.error))
            continue
        extent = outcome.prepared.scene_extent
        train_failed = outcome.train is not None and outcome.train.config is None
        if train_failed:
            rows.append(
                report.summary_row(
                    outcome.name,
                    "all",
                    "crossfire",
                    None,
                    outcome.train.seconds,
                    device_label,
                    extent,
                    "failed",
                    f"map training failed: {outcome.train.message}",
                )  # fmt: skip
            )
        for job in outcome.jobs:
            status, message = job.status()
            summary = _read_json(Path(job.output_dir) / "summary.json") if status == "ok" else None
            if job.method in PEER_VARIANTS:
                map_seconds = (summary or {}).get("mapping_seconds")
                label = "cpu (pycolmap)"
            else:
                map_seconds, label = outcome.train.seconds, device_label
            rows.append(
                report.summary_row(
                    job.scene,
                    job.condition,
                    job.method,
                    summary,
                    map_seconds,
                    label,
                    extent,
                    status,
                    message,
                    protocol=outcome.prepared.protocol,
                )  # fmt: skip
            )
            results_csv = Path(job.output_dir) / "results.csv"
            if summary is not None and results_csv.is_file():
                t_err, r_err = report.query_errors(results_csv)
                curves.setdefault(job.scene, {})[(job.method, job.condition)] = (100.0 * t_err / extent, r_err)
            if job.method == "crossfire":
                reasons[(job.scene, job.condition)] = _failure_reason(results_csv)
    return rows, curves, reasons


def _command_line(run: BenchmarkRun) -> str:
    parts = ["python -m benchmarks.run", f"--mode {run.mode}"]
    defaults = BenchmarkRun()
    names = ("scenes", "methods", "conditions", "num_queries", "iterations", "method", "device_type", "torch_threads")
    # methods default to the mode's (None), so only an explicit --methods is printed
    for name in names:
        value = getattr(run, name)
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            parts.append(f"{flag} {' '.join(value) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def section_body(
    run: BenchmarkRun, settings: ModeSettings, machine: dict, rows, bullets, figure_link: str, wall_seconds: float
) -> str:
    """The generated part of BENCHMARKS.md."""
    changes = [f"`{c}`: {CONDITIONS[c].describe()}" for c in settings.conditions if CONDITIONS.get(c)]
    if "relit" in settings.conditions:
        changes.append("`relit` (generated scenes only): the scene's own queries, rendered under its changed lighting")
    if "novel-view" in settings.conditions:
        changes.append(
            "`novel-view` (generated scenes only): queries from viewpoints no training camera took (closer, farther, "
            "other heights, headings and rolls), at the training lighting"
        )
    sizes = settings.sizes
    lines = [
        f"Generated by `{_command_line(run)}` in {wall_seconds / 60:.1f} min wall ({settings.description}).",
        "",
        *report.machine_lines(machine),
        "",
        f"**Maps:** `{run.method}`, {settings.iterations} iterations, one per scene, trained with `ns-train` "
        f"(map time = wall time of that command). **Queries:** {sizes.num_queries} per scene"
        + "".join(f", {scene} {n}" for scene, n in sizes.scene_num_queries)
        + " (fewer where the scene has fewer: fern 3, held-out scenes 12); "
        f"images: synthetic {sizes.synthetic_size[0]}x{sizes.synthetic_size[1]}, fox 1080x1920 / "
        f"{sizes.fox_downscale}, fern `{sizes.fern_images}`, lego {sizes.lego_size}x{sizes.lego_size}. "
        "Map methods use ns-localize's defaults (top-3 retrieval priors)"
        + "".join(
            f" plus `{' '.join(f'--matcher.{k}={v}' for k, v in options)}` for {method}"
            for method, options in settings.matcher_options.items()
        )
        + ". The peer (`python -m benchmarks.peer`) uses the same images and no radiance field; its map time is "
        "SIFT + matching + triangulation.",
        "",
        "**Methods:** " + ", ".join(f"`{m}`" for m in run.method_list()) + ".",
        "",
        "**Conditions:** `original`; " + "; ".join(changes) + ". Recall thresholds scale with the diagonal of "
        "the training cameras' bounding box (the scene extent); failed queries count as misses. Median errors "
        "are over localized queries only; the medians over all queries count failures as infinite (hloc's convention: "
        "`inf` when half or more failed); confidently wrong is the share of queries reported localized but more than "
        "5% of the extent or 5 deg off; seconds by stage and renders are medians per query (the peer reports neither).",
        "",
        "**Standing:** crossfire against the better of the two peers on each row (every figure below it in full).",
        "",
        report.standing_table(rows),
        "",
        report.markdown_table(rows),
        "",
        f"![Error CDFs per scene and method]({figure_link})",
        "",
        "**Where crossfire loses to a baseline** (generated: recalls at 1% / 2% / 5% no lower and one higher, or "
        "equal and a lower median rotation error; the reasons are discussed below the table by whoever ran it):",
        "",
        *(bullets or ["- nowhere in this run."]),
    ]
    return "\n".join(lines)


def run_benchmark(run: BenchmarkRun) -> int:
    settings = run.settings()
    _validate(run, settings)
    peers = [m for m in run.method_list() if m in PEER_VARIANTS]
    if peers and importlib.util.find_spec("pycolmap") is None:
        CONSOLE.print(
            f"[yellow]pycolmap is not installed, so {', '.join(peers)} are skipped: pip install -e '.[bench]'"
        )
        run = replace(run, methods=tuple(m for m in run.method_list() if m not in PEER_VARIANTS))
    out = Path(run.output_dir or REPO / "outputs" / "bench" / run.mode)
    out.mkdir(parents=True, exist_ok=True)
    if run.torch_threads is not None:  # inherited by every command the benchmark starts
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(run.torch_threads)
    from benchmarks.machine import machine_info

    machine = machine_info()
    device = _device(run)
    scenes = run.scene_list()
    CONSOLE.rule(f"benchmarks.run --mode {run.mode}: {', '.join(scenes)} on {device[1]}")
    CONSOLE.print(f"Output in {out}/ (logs: maps/*.train.log, localization/<scene>/localize.log)")
    started = time.perf_counter()
    outcomes: List[SceneOutcome] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=CONSOLE) as progress:
        task = progress.add_task("scenes", total=len(scenes))
        for name in scenes:
            outcomes.append(run_scene(run, settings, name, out, device, progress, task))
            progress.advance(task)
    wall = time.perf_counter() - started
    rows, curves, reasons = gather(outcomes, device[1])
    rows = report.iter_rows(rows, [scene_label(s) for s in scenes], settings.conditions, run.method_list())
    report.write_tables(out, rows)
    figure = report.plot_error_cdfs(out / "error_cdf.png", curves, settings.conditions, run.method_list())
    bullets = report.crossfire_losses(rows, curves, reasons)
    timings = {o.name: o.seconds for o in outcomes}
    write_json_atomic(
        out / "run.json",
        {"mode": run.mode, "wall_seconds": wall, "timings": timings, "machine": machine, "settings": asdict(settings)},
    )
    # one file a script can read: every row of the table (results.csv holds the same as text)
    write_json_atomic(out / "summary.json", {"mode": run.mode, "rows": [dict(row) for row in rows]})
    update = run.update_benchmarks_md if run.update_benchmarks_md is not None else run.mode != "smoke"
    gpu = device[0] == "cuda"
    name = "bench-table-gpu" if gpu else "bench-table"
    link = str(figure)
    if update:
        run.figure_dir.mkdir(parents=True, exist_ok=True)
        target = run.figure_dir / f"error_cdf_{run.mode}{'_gpu' if gpu else ''}.png"
        target.write_bytes(figure.read_bytes())
        link = os.path.relpath(target, Path(run.benchmarks_md).resolve().parent)
    body = section_body(run, settings, machine, rows, bullets, link, wall)
    (out / "section.md").write_text(body + "\n", encoding="utf-8")
    if update:
        heading = f"### GPU timings (benchmarks.run on {device[1]})" if gpu else report.SECTION_HEADING
        report.update_markdown_file(run.benchmarks_md, body, name=name, heading=heading)
        CONSOLE.print(f"Rewrote the {name} section of {run.benchmarks_md}.")
    CONSOLE.print(report.markdown_table(rows), markup=False, highlight=False, soft_wrap=True)
    for scene, seconds in timings.items():
        CONSOLE.print(f"{scene}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    CONSOLE.print(f"Benchmark finished in {wall / 60:.1f} min; table in {out}/results.md, plots in {figure}.")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def entrypoint() -> None:
    raise SystemExit(tyro.cli(BenchmarkRun).main())


if __name__ == "__main__":
    entrypoint()
