"""Step: localize the query folders of a scene with every method, or reuse finished results.

Map-based methods (crossfire, sift, photometric, prior) run the library step ns-localize runs
(``crossfire_ns.localize.folder``) with the same settings a user would pass. By default all the jobs of a benchmark
call run in one worker process (``python -m benchmarks.localize --jobs-file F``) that loads each map once
(``crossfire_ns.map.load_map``) and hands it to every job: starting ns-localize costs about 10 s per call on
2 CPU cores, more than most queries. A job that raises is recorded and the worker goes on; if the worker
itself dies, the jobs it did not finish are recorded as failed and the benchmark goes on. ``isolate=True`` runs
every job as its own ``ns-localize`` command instead. The structure-based peer runs as ``python -m
benchmarks.peer``.

Each job's folder ends with ``summary.json``, ``results.csv``, ``poses.json`` (written by the method) and
``job.json`` (its key, status, wall time): a job whose ``job.json`` has the same key and status ``ok`` is reused.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.process import TIMEOUT_CODE, run_logged
from crossfire_ns.io.atomic import write_json_atomic

MAP_METHODS = ("crossfire", "sift", "photometric", "prior")
"""Matchers of ns-localize: they use the trained map and its retrieval priors."""
PEER = "sfm-sift"
"""The structure-based SIFT peer (pycolmap), which uses no radiance field."""
PEER_VARIANTS: Dict[str, Tuple[str, ...]] = {
    PEER: (),
    "sfm-sift-lowpeak": ("--mapping.sift.peak-threshold", repr(0.02 / 3 / 4)),
}
"""Peer rows -> their ``python -m benchmarks.peer`` options: COLMAP's SIFT, and SIFT with a quarter of COLMAP's peak
threshold (map and queries), the fairer peer on dark and blurred images: it helped more than CLAHE
(``benchmarks.peer_contrast``; benchmarks/README.md has the figures)."""
ALL_METHODS = (*MAP_METHODS, *PEER_VARIANTS)


@dataclass(frozen=True)
class LocalizeJob:
    """One method on one query folder."""

    scene: str
    condition: str
    method: str
    """One of ALL_METHODS."""
    query_dir: Path
    output_dir: Path
    scene_extent: float
    """Passed as --scene-extent so every method's recall uses the same thresholds."""
    load_config: Optional[Path] = None
    """The map (map-based methods)."""
    train_dir: Optional[Path] = None
    """The training views (the peer builds its own map from them)."""
    map_key: str = ""
    """Identity of the map (the train step's key), part of the job's key."""
    matcher_options: Tuple[Tuple[str, Any], ...] = ()
    """(field, value) pairs of the method's matcher config (ns-localize's ``--matcher.<field>``; a nested field as
    ``group.field``)."""

    def argv(self) -> List[str]:
        """Arguments of ``ns-localize`` (map methods) or ``python -m benchmarks.peer`` (the peer)."""
        common = ["--query-dir", str(self.query_dir), "--output-dir", str(self.output_dir)]
        common += ["--scene-extent", repr(float(self.scene_extent))]
        if self.method in PEER_VARIANTS:  # each variant keeps its own cached map
            peer_map = Path(self.output_dir).parent.parent / ("peer-map" + self.method[len(PEER) :])
            return [
                "--train-dir",
                str(self.train_dir),
                *common,
                "--map-dir",
                str(peer_map),
                *PEER_VARIANTS[self.method],
            ]
        if self.load_config is None:
            raise ValueError(f"{self.scene}/{self.condition}/{self.method}: a map method needs load_config")
        options = [
            arg for name, value in self.matcher_options for arg in (f"--matcher.{name.replace('_', '-')}", str(value))
        ]
        # the benchmark decides what is finished (job.json); a job it reruns starts afresh
        return ["--load-config", str(self.load_config), *common, "--overwrite", f"matcher:{self.method}", *options]

    def payload(self) -> Dict[str, Any]:
        """What the worker needs to run this job (JSON)."""
        return {
            "key": self.key(),
            "method": self.method,
            "load_config": str(self.load_config),
            "query_dir": str(self.query_dir),
            "output_dir": str(self.output_dir),
            "scene_extent": float(self.scene_extent),
            "matcher_options": [list(option) for option in self.matcher_options],
        }

    def key(self) -> str:
        text = json.dumps({"argv": self.argv(), "map": self.map_key}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def done(self) -> bool:
        """Finished earlier with the same key (and its summary is there)."""
        meta = Path(self.output_dir) / "job.json"
        if not (meta.is_file() and (Path(self.output_dir) / "summary.json").is_file()):
            return False
        data = json.loads(meta.read_text())
        return data.get("key") == self.key() and data.get("status") == "ok"

    def record(self, status: str, seconds: float, message: str = "") -> None:
        """Write ``job.json``: key, status (ok / failed), wall seconds and a message."""
        write_json_atomic(
            Path(self.output_dir) / "job.json",
            {
                "key": self.key(),
                "status": status,
                "seconds": seconds,
                "message": message,
                "job": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()},
            },
        )

    def status(self) -> Tuple[str, str]:
        """(status, message) from job.json, or ("failed", "not run") when there is none."""
        meta = Path(self.output_dir) / "job.json"
        if not meta.is_file():
            return "failed", "not run (the worker stopped before this job; see the log)"
        data = json.loads(meta.read_text())
        return data.get("status", "failed"), data.get("message", "")


def _finish(job: LocalizeJob, code: int, seconds: float, log: Path) -> None:
    if code == 0 and (Path(job.output_dir) / "summary.json").is_file():
        job.record("ok", seconds)
    elif code == TIMEOUT_CODE:
        job.record("failed", seconds, f"stopped at the time limit after {seconds:.0f} s; see {log}")
    else:
        job.record("failed", seconds, f"exit code {code}; see {log}")


def run_isolated(job: LocalizeJob, log: Path, timeout_s: Optional[float] = None) -> None:
    """One job as its own command (ns-localize or the peer), output appended to ``log``."""
    if job.method in PEER_VARIANTS:
        command = [sys.executable, "-m", "benchmarks.peer", *job.argv()]
    else:
        command = [str(Path(sys.executable).parent / "ns-localize"), *job.argv()]
    start = time.perf_counter()
    code = run_logged(command, log, timeout_s, cwd=_repo_root())
    _finish(job, code, time.perf_counter() - start, log)


def run_in_worker(
    jobs: Sequence[LocalizeJob], jobs_file: Path, log: Path, timeout_s: Optional[float] = None, on_done=None
) -> int:
    """Map-method jobs in one worker process that loads each map once; returns the worker's exit code.

    ``on_done(job)`` is called as each job finishes (its job.json appears), and for every job at the end.
    """
    payload = [job.payload() for job in jobs]
    write_json_atomic(jobs_file, payload)
    for job in jobs:  # a stale job.json must not make an unfinished job look finished
        (Path(job.output_dir) / "job.json").unlink(missing_ok=True)
    reported = set()

    def poll() -> None:
        for job in jobs:
            if job not in reported and (Path(job.output_dir) / "job.json").is_file():
                reported.add(job)
                if on_done:
                    on_done(job)

    command = [sys.executable, "-m", "benchmarks.localize", "--jobs-file", str(jobs_file)]
    code = run_logged(command, log, timeout_s, poll=poll, cwd=_repo_root())
    poll()
    for job in jobs:
        if job not in reported:
            if code == TIMEOUT_CODE:
                job.record("failed", 0.0, f"the worker was stopped at its time limit before this job; see {log}")
            if on_done:
                on_done(job)
    return code


def run_jobs(
    jobs: Sequence[LocalizeJob], log: Path, isolate: bool = False, on_done=None, timeout_s: Optional[float] = None
) -> Dict[LocalizeJob, str]:
    """Run the jobs that are not done yet; returns job -> "reused" / "ok" / "failed".

    ``timeout_s`` limits each command: the worker (all map-method jobs of the call) or one isolated job.
    """
    outcome: Dict[LocalizeJob, str] = {}
    todo = []
    for job in jobs:
        if job.done():
            outcome[job] = "reused"
            if on_done:
                on_done(job)
        else:
            todo.append(job)
    worker_jobs = [j for j in todo if j.method not in PEER_VARIANTS and not isolate]
    if worker_jobs:
        run_in_worker(worker_jobs, log.with_suffix(".jobs.json"), log, timeout_s, on_done)
    for job in todo:
        if job not in worker_jobs:
            run_isolated(job, log, timeout_s)
            if on_done:
                on_done(job)
    for job in todo:
        outcome[job] = job.status()[0]
    return outcome


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------
# The worker: the library step ns-localize runs, one map load for many jobs.
# --------------------------------------------------------------------------------------------------------


def worker_main(jobs_file: Path) -> int:
    """Run each job of ``jobs_file`` as ns-localize would, loading each map once, recording each outcome."""
    import warnings

    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
    return run_worker_jobs(json.loads(Path(jobs_file).read_text()))


def run_worker_jobs(jobs: List[dict], load_map=None, run=None) -> int:
    """The worker's loop over job payloads (``LocalizeJob.payload``); a job that raises is recorded as failed.

    ``load_map`` (default ``crossfire_ns.map.load_map``) is called once per map, and that map serves every job on
    it; ``run(map, job)`` (default ``run_job``) localizes one job."""
    if load_map is None:
        from crossfire_ns.map import load_map
    run = run or run_job
    maps: Dict[str, Any] = {}
    failures = 0
    for job in jobs:
        out = Path(job["output_dir"])
        print(f"\n=== {job['method']} on {job['query_dir']} -> {out}", flush=True)
        start = time.perf_counter()
        try:
            if job["load_config"] not in maps:
                maps[job["load_config"]] = load_map(Path(job["load_config"]))
            run(maps[job["load_config"]], job)
            status, message = "ok", ""
        except BaseException as err:  # noqa: BLE001  one job's failure must not end the others
            if isinstance(err, KeyboardInterrupt):
                raise
            traceback.print_exc()
            status, message = "failed", f"{type(err).__name__}: {err}"
        if status == "ok" and not (out / "summary.json").is_file():
            status, message = "failed", "no summary.json written"
        failures += status != "ok"
        write_json_atomic(
            out / "job.json",
            {"key": job["key"], "status": status, "seconds": time.perf_counter() - start, "message": message},
        )
    return 1 if failures else 0


def run_job(crossfire_map, job: dict) -> dict:
    """One job's localization on a loaded map, as ``ns-localize`` runs it; returns the summary."""
    from crossfire_ns.localize.folder import localize_folder, read_inputs
    from crossfire_ns.localize.matchers import MATCHER_CONFIGS

    matcher = with_options(MATCHER_CONFIGS[job["method"]](), job.get("matcher_options", ()))
    inputs = read_inputs(Path(job["query_dir"]))
    return localize_folder(
        crossfire_map,
        inputs,
        Path(job["output_dir"]),
        matcher=matcher,
        scene_extent=job["scene_extent"],
        overwrite=True,
    )


def with_options(config, options) -> Any:
    """``config`` with ``options`` ((name, value) pairs; ``group.field`` names a field of an option group, at any
    depth) replaced."""
    for name, value in options:
        head, _, rest = name.partition(".")
        value = with_options(getattr(config, head), [(rest, value)]) if rest else value
        config = replace(config, **{head: value})
    return config


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="benchmarks worker: localization jobs with one map load each")
    parser.add_argument("--jobs-file", type=Path, required=True)
    sys.exit(worker_main(parser.parse_args().jobs_file))
