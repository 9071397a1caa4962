"""benchmarks.train / localize / run: commands, caching keys, failure recording, gathering rows."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import localize as bench_localize
from benchmarks.localize import PEER, LocalizeJob, with_options
from benchmarks.train import TrainResult, TrainSpec, finished_map, map_dir, train_command
from crossfire_ns.io.atomic import write_csv_atomic, write_json_atomic
from crossfire_ns.localize.matchers import CrossfireMatcherConfig
from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult


def _train_folder(tmp_path: Path) -> Path:
    data = tmp_path / "train"
    data.mkdir()
    (data / "transforms.json").write_text(json.dumps({"frames": []}))
    return data


def test_train_command_and_cache_key(tmp_path):
    data = _train_folder(tmp_path)
    spec = TrainSpec("fox", data, iterations=100, extra_args=("--pipeline.model.background-color", "white"))
    command = train_command(spec, tmp_path / "maps", "abc")
    assert Path(command[0]).name == "ns-train" and command[1] == "crossfire-lite"
    assert command[-3:] == ["nerfstudio-data", "--eval-mode", "all"]
    joined = " ".join(command)
    assert "--max-num-iterations 100" in joined and "--machine.device-type cpu" in joined
    assert joined.index("background-color") < joined.index("nerfstudio-data")
    assert spec.key() == TrainSpec("fox", data, iterations=100, extra_args=spec.extra_args).key()
    assert spec.key() != TrainSpec("fox", data, iterations=200, extra_args=spec.extra_args).key()
    key = spec.key()
    (data / "transforms.json").write_text(json.dumps({"frames": [1]}))
    assert spec.key() != key  # other training views, other map

    folder = map_dir(spec, tmp_path / "maps")
    assert folder.parts[-3:] == ("fox", "crossfire-lite", spec.key())
    folder.mkdir(parents=True)
    assert finished_map(folder) is None
    (folder / "config.yml").write_text("x")
    (folder / "nerfstudio_models").mkdir()
    (folder / "nerfstudio_models" / "step-000000099.ckpt").write_text("x")
    write_json_atomic(folder / "train_meta.json", {"status": "failed", "seconds": 3.0})
    assert finished_map(folder) is None
    write_json_atomic(folder / "train_meta.json", {"status": "ok", "seconds": 3.0})
    assert finished_map(folder)["seconds"] == 3.0


def _job(tmp_path: Path, method: str = "crossfire", **kwargs) -> LocalizeJob:
    fields = dict(
        scene="fern",
        condition="lighting",
        method=method,
        query_dir=tmp_path / "q",
        output_dir=tmp_path / "loc" / "fern" / "lighting" / method,
        scene_extent=10.5,
        load_config=None if method == PEER else tmp_path / "map" / "config.yml",
        train_dir=tmp_path / "train" if method == PEER else None,
        map_key="k1",
    )
    fields.update(kwargs)
    return LocalizeJob(**fields)


def test_localize_job_arguments_keys_and_status(tmp_path):
    import tyro

    from crossfire_ns.scripts.cli import TYRO_CONFIG
    from crossfire_ns.scripts.localize import Localize

    job = _job(tmp_path, matcher_options=(("retrieval.top_k", 5),))
    argv = job.argv()
    assert argv[:2] == ["--load-config", str(tmp_path / "map" / "config.yml")]
    assert "matcher:crossfire" in argv and argv[-2:] == ["--matcher.retrieval.top-k", "5"]
    parsed = tyro.cli(Localize, args=argv, config=TYRO_CONFIG)  # what an isolated job runs parses
    assert parsed.matcher.retrieval.top_k == 5 and parsed.scene_extent == 10.5
    assert job.payload()["matcher_options"] == [["retrieval.top_k", 5]] and job.payload()["key"] == job.key()
    assert with_options(CrossfireMatcherConfig(), job.matcher_options).retrieval.top_k == 5  # in-process jobs alike
    assert argv[argv.index("--scene-extent") + 1] == "10.5"
    peer = _job(tmp_path, PEER)
    assert peer.argv()[:2] == ["--train-dir", str(tmp_path / "train")]
    assert peer.argv()[peer.argv().index("--map-dir") + 1] == str(tmp_path / "loc" / "fern" / "peer-map")
    assert job.key() != _job(tmp_path, map_key="k2").key()
    with pytest.raises(ValueError, match="load_config"):
        _job(tmp_path, load_config=None).argv()

    assert not job.done() and job.status()[0] == "failed" and "not run" in job.status()[1]
    job.record("failed", 1.0, "exit code 1")
    assert job.status() == ("failed", "exit code 1") and not job.done()
    write_json_atomic(Path(job.output_dir) / "summary.json", {})
    job.record("ok", 2.0)
    assert job.done() and not _job(tmp_path, map_key="k2").done()


def test_worker_loads_each_map_once_records_each_job_and_goes_on_after_a_failure(tmp_path):
    loaded, seen = [], []

    def fake_load(path):
        loaded.append(path)
        return f"map of {path.parent.name}"

    def fake_run(crossfire_map, job):
        seen.append((crossfire_map, job["method"]))
        if job["method"] == "sift":
            raise RuntimeError("sift exploded")
        write_json_atomic(Path(job["output_dir"]) / "summary.json", {"num_queries": 1})

    other_map = tmp_path / "other" / "config.yml"
    jobs = [_job(tmp_path, m) for m in ("sift", "crossfire")] + [_job(tmp_path, "prior", load_config=other_map)]
    assert bench_localize.run_worker_jobs([j.payload() for j in jobs], load_map=fake_load, run=fake_run) == 1
    assert loaded == [tmp_path / "map" / "config.yml", other_map]  # one load per map, shared by its jobs
    assert seen == [("map of map", "sift"), ("map of map", "crossfire"), ("map of other", "prior")]
    assert jobs[0].status()[0] == "failed" and "sift exploded" in jobs[0].status()[1]
    assert jobs[1].done() and jobs[2].done()


def test_worker_job_with_an_unknown_matcher_option_fails_alone(tmp_path):
    job = _job(tmp_path, "prior", matcher_options=(("no_such_option", 1),))
    assert bench_localize.run_worker_jobs([job.payload()], load_map=lambda path: object()) == 1
    assert job.status()[0] == "failed" and "no_such_option" in job.status()[1]


def test_gather_builds_rows_curves_and_the_section(tmp_path):
    from benchmarks.modes import MODES
    from benchmarks.run import BenchmarkRun, SceneOutcome, gather, section_body
    from benchmarks.scenes import PreparedScene

    prepared = PreparedScene("fern", tmp_path / "train", tmp_path / "q", scene_extent=10.0)
    train = TrainResult(tmp_path / "map" / "config.yml", 95.0, cached=False)
    jobs = [_job(tmp_path, m, condition="original") for m in ("crossfire", "sift", PEER)]
    results = {
        "crossfire": [QueryResult("a", "failed", has_gt=True, message="only 31 of 700 matches are PnP inliers")],
        PEER: [QueryResult("a", "localized", t_err=0.03, r_err=0.05, has_gt=True, seconds=0.8)],
    }
    for job in jobs[::2]:
        items = results[job.method]
        summary = summarize(items, [(0.1, 1.0), (0.2, 2.0), (0.5, 5.0)])
        summary["recall_thresholds_relative"] = [[0.01, 1.0], [0.02, 2.0], [0.05, 5.0]]
        if job.method == PEER:
            summary["mapping_seconds"] = 7.5
        write_json_atomic(Path(job.output_dir) / "summary.json", summary)
        write_csv_atomic(Path(job.output_dir) / "results.csv", [{**r.to_dict(), "c2w": None} for r in items])
        job.record("ok", 1.0)
    jobs[1].record("failed", 1.0, "exit code -9; see log")
    outcome = SceneOutcome("fern", prepared, train, tuple(jobs))
    rows, curves, reasons = gather([outcome, SceneOutcome("lego", error="scene preparation failed: no data")], "cpu")
    by_method = {r["method"]: r for r in rows if r["scene"] == "fern"}
    assert by_method["crossfire"]["map_seconds"] == 95.0 and by_method["crossfire"]["num_localized"] == 0
    assert by_method[PEER]["map_seconds"] == 7.5 and by_method[PEER]["recall_1"] == 1.0
    assert by_method["sift"]["status"] == "failed" and "-9" in by_method["sift"]["message"]
    assert [r["status"] for r in rows if r["scene"] == "lego"] == ["failed"]
    assert np.isinf(curves["fern"][("crossfire", "original")][1]).all()
    assert "PnP inliers" in reasons[("fern", "original")]

    run = BenchmarkRun(mode="quick", scenes=("fern",))
    from benchmarks import report

    bullets = report.crossfire_losses(rows, curves, reasons)
    body = section_body(run, MODES["quick"], {"cpu_count": 2, "versions": {"torch": "x"}}, rows, bullets, "f.png", 60)
    assert "python -m benchmarks.run --mode quick --scenes fern" in body
    assert "![Error CDFs" in body and "sfm-sift" in body and "loses to" in body


def test_run_logged_logs_polls_and_stops_at_the_time_limit(tmp_path):
    import sys
    import time

    from benchmarks.process import TIMEOUT_CODE, run_logged
    from benchmarks.train import last_train_step

    log = tmp_path / "step.log"
    code = run_logged([sys.executable, "-c", "print('10 (1.00%) 2 s'); print('20 (2.00%) 1 s')"], log)
    assert code == 0 and "20 (2.00%)" in log.read_text() and last_train_step(log) == 20
    polls = []
    start = time.monotonic()
    code = run_logged(
        [sys.executable, "-c", "import time; time.sleep(30)"], log, timeout_s=1.5, poll=lambda: polls.append(1)
    )
    assert code == TIMEOUT_CODE and time.monotonic() - start < 15 and polls
    assert "time limit" in log.read_text()
    assert run_logged([sys.executable, "-c", "raise SystemExit(3)"], log) == 3


def test_peer_variants_keep_their_own_maps_and_options(tmp_path):
    from benchmarks.localize import PEER_VARIANTS
    from benchmarks.peer.pipeline import SfmPeer

    clahe = _job(tmp_path, "sfm-sift-lowpeak")
    argv = clahe.argv()
    assert argv[argv.index("--map-dir") + 1] == str(tmp_path / "loc" / "fern" / "peer-map-lowpeak")
    assert argv[-2:] == list(PEER_VARIANTS["sfm-sift-lowpeak"]) and clahe.key() != _job(tmp_path, PEER).key()
    import tyro

    assert tyro.cli(SfmPeer, args=argv).mapping.sift.peak_threshold == pytest.approx(0.02 / 12)  # as the peer parses


def test_quick_mode_scenes_methods_and_queries():
    from benchmarks.modes import MODES
    from benchmarks.run import BenchmarkRun, scene_label
    from benchmarks.scenes import DEFAULT_SCENES, HELDOUT_SCENES, expand_scenes

    run = BenchmarkRun(mode="quick")
    quick = ("synthetic", "heldout-room", "heldout-orbit", "fox", "fern", "lego")
    assert run.scene_list() == quick == MODES["quick"].scenes  # fixed: quick mode does not grow with the family
    assert BenchmarkRun(mode="smoke").scene_list() == quick
    full = BenchmarkRun(mode="full").scene_list()  # the default scenes, the whole held-out family expanded
    assert MODES["full"].scenes is None and full == tuple(expand_scenes(DEFAULT_SCENES))
    assert set(HELDOUT_SCENES) <= set(full) and full[0] == "synthetic" and full[-3:] == ("fox", "fern", "lego")
    family = [HELDOUT_SCENES[name] for name in full if name in HELDOUT_SCENES]  # what full mode runs of the family
    assert len(family) >= 6 and len({spec.layout for spec in family}) >= 4
    assert all(spec.num_query >= 12 for spec in family)
    assert BenchmarkRun(mode="quick", scenes=("synthetic-heldout",)).scene_list() == tuple(HELDOUT_SCENES)
    assert BenchmarkRun(mode="full", scenes=("fern",)).scene_list() == ("fern",)
    assert "photometric" not in run.method_list() and "sfm-sift-lowpeak" in run.method_list()
    assert "sift" not in run.method_list()  # the render loop: hours over every query and condition
    assert BenchmarkRun(mode="quick", methods=("photometric",)).method_list() == ("photometric",)
    sizes = MODES["quick"].sizes
    assert [sizes.queries_for(s) for s in ("synthetic", "fox", "lego", "fern")] == [10, 17, 10, 17]
    assert {"blur", "lowlight", "relit", "novel-view", "lighting", "original"} == set(MODES["quick"].conditions)
    assert BenchmarkRun(mode="quick", num_queries=4).settings().sizes.queries_for("synthetic") == 4
    assert BenchmarkRun(mode="quick").seed_args() == ()  # nerfstudio's seed: earlier maps are reused
    assert BenchmarkRun(mode="quick", seed=3).seed_args() == ("--machine.seed", "3")
    option = "--pipeline.datamanager.pixel-sampler.max-window-pixels 9600"
    assert BenchmarkRun(mode="quick", seed=3, train_args=option).extra_train_args() == (
        "--pipeline.datamanager.pixel-sampler.max-window-pixels", "9600", "--machine.seed", "3"
    )  # fmt: skip
    assert BenchmarkRun(mode="quick").extra_train_args() == ()
    assert scene_label("7scenes:/data/7scenes/stairs/") == "7scenes-stairs"


def test_gather_marks_metric_protocol_rows(tmp_path):
    from benchmarks.run import SceneOutcome, gather
    from benchmarks.scenes import PreparedScene

    prepared = PreparedScene("7scenes-stairs", tmp_path / "t", tmp_path / "q", scene_extent=1.0, protocol="metric")
    job = _job(tmp_path, PEER, condition="original")
    summary = summarize([QueryResult("a", "localized", t_err=0.04, r_err=1.0, has_gt=True)], [(0.05, 5.0)])
    summary["recall_thresholds_relative"] = [[0.05, 5.0]]
    write_json_atomic(Path(job.output_dir) / "summary.json", summary)
    job.record("ok", 1.0)
    rows, _, _ = gather([SceneOutcome("7scenes-stairs", prepared, None, (job,))], "cpu")
    assert rows[0]["protocol"] == "metric" and rows[0]["recall_5"] == 1.0
