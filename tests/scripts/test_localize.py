"""ns-localize end to end on a tiny trained map, including every kind of bad input."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossfire_ns.localize.matchers import CrossfireMatcherConfig
from crossfire_ns.scripts.localize import Localize
from tests.helpers import tiny_map_matcher

pytestmark = pytest.mark.slow
FAST = tiny_map_matcher()


def _run(config, query_dir, out, **kwargs) -> int:
    return Localize(load_config=config, query_dir=query_dir, output_dir=out, matcher=FAST, **kwargs).main()


@pytest.fixture
def messy_queries(bundled_scene, tmp_path):
    """The scene's queries plus a corrupt file, a blank image and an image of the wrong size."""
    qdir = tmp_path / "queries"
    shutil.copytree(bundled_scene / "queries", qdir)
    meta = json.loads((qdir / "transforms.json").read_text())
    w, h = meta["w"], meta["h"]
    (qdir / "images" / "corrupt.png").write_bytes(b"this is not a png")
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(qdir / "images" / "blank.png")
    Image.fromarray(np.zeros((h // 2, w // 2, 3), np.uint8)).save(qdir / "images" / "small.png")
    pose = meta["frames"][0]["transform_matrix"]
    for name in ("corrupt", "blank", "small"):
        meta["frames"].append({"file_path": f"images/{name}.png", "transform_matrix": pose})
    (qdir / "transforms.json").write_text(json.dumps(meta))
    return qdir


def test_end_to_end_with_bad_images(trained_map, messy_queries, tmp_path):
    config, _ = trained_map
    out = tmp_path / "out"
    assert _run(config, messy_queries, out) == 0
    for name in ("poses.json", "results.csv", "summary.json", "errors.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp*")), "no temporary files may be left behind"
    rows = {r["file_path"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert len(rows) == 7
    assert rows["images/corrupt.png"]["status"] == "unreadable"
    assert "corrupt.png" in rows["images/corrupt.png"]["message"]
    assert rows["images/small.png"]["status"] == "unreadable"
    assert "40x30" in rows["images/small.png"]["message"] and "80x60" in rows["images/small.png"]["message"]
    assert rows["images/blank.png"]["status"] == "failed"
    assert rows["images/blank.png"]["message"]
    poses = json.loads((out / "poses.json").read_text())
    assert Path(poses["metadata"]["query_dir"]) == messy_queries.resolve()  # the viewer finds thumbnails by it
    assert [f["file_path"] for f in poses["frames"]] == list(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_queries"] == 7 and summary["num_unreadable"] == 2
    assert summary["num_localized"] + summary["num_failed"] == 5
    for frame in poses["frames"]:
        if frame["status"] == "localized":
            assert np.asarray(frame["transform_matrix"]).shape == (4, 4)


def test_missing_config_is_a_clear_error(bundled_scene, tmp_path, capsys):
    assert _run(tmp_path / "nope" / "config.yml", bundled_scene / "queries", tmp_path / "out") == 2
    out = capsys.readouterr().out
    assert "nope/config.yml" in out.replace("\n", "") and "ns-train" in out


def test_empty_query_folder_is_a_clear_error(trained_map, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run(trained_map[0], tmp_path / "empty", tmp_path / "out") == 2
    assert "empty" in capsys.readouterr().out


def test_malformed_transforms_is_a_clear_error(trained_map, bundled_scene, tmp_path, capsys):
    qdir = tmp_path / "q"
    shutil.copytree(bundled_scene / "queries", qdir)
    (qdir / "transforms.json").write_text('{"frames": [ {"file_path": ')
    assert _run(trained_map[0], qdir, tmp_path / "out") == 2
    assert "transforms.json" in capsys.readouterr().out
    assert not (tmp_path / "out" / "poses.json").exists()


def _help(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "crossfire_ns.scripts.localize", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr  # a quiet start: the known third-party warnings are filtered
    return out.stdout


def test_cli_help_documents_options():
    text = _help()
    for flag in ("--load-config", "--query-dir", "--output-dir", "matcher:sift", "--prior", "--overlays"):
        assert flag in text
    assert "--matcher.refine.radius-px" in text and "--matcher.ratio" not in text  # crossfire's own options
    for group in ("retrieval", "coarse", "refine", "patch", "verify", "pnp", "render", "index"):  # one group a stage
        assert f"matcher.{group} options" in text
    assert "--matcher.index.patch-radius-px" not in text  # the patch settings live once, in --matcher.patch.*


def test_each_matcher_shows_only_its_own_options():
    sift = _help("matcher:sift")
    assert "--matcher.ratio" in sift and "--matcher.top-k" in sift
    assert "--matcher.descriptor-source" not in sift and "--matcher.steps" not in sift
    photometric = _help("matcher:photometric")
    assert "--matcher.steps" in photometric and "--matcher.top-k" not in photometric
    assert "_target" not in sift + photometric
    render = _help("matcher:crossfire-render")
    assert "--matcher.descriptor-source" in render and "--matcher.render-width" in render
    assert "--matcher.refine." not in render and "--matcher.index." not in render


def test_options_may_follow_the_matcher_subcommand():
    import tyro

    from crossfire_ns.scripts.cli import TYRO_CONFIG

    args = ["matcher:sift", "--matcher.top-k", "5", "--load-config", "c.yml", "--query-dir", "q", "--output-dir", "o"]
    parsed = tyro.cli(Localize, args=args, config=TYRO_CONFIG)
    assert parsed.matcher.top_k == 5 and parsed.matcher.render_width == 160 and parsed.load_config == Path("c.yml")
    default = tyro.cli(
        Localize, args=["--load-config", "c.yml", "--query-dir", "q", "--output-dir", "o"], config=TYRO_CONFIG
    )
    assert isinstance(default.matcher, CrossfireMatcherConfig)


def test_queries_without_intrinsics_use_the_training_camera(trained_map, bundled_scene, tmp_path, capsys):
    qdir = tmp_path / "bare"
    shutil.copytree(bundled_scene / "queries" / "images", qdir)
    out = tmp_path / "out"
    assert _run(trained_map[0], qdir, out, max_queries=2) == 0
    assert "training camera" in capsys.readouterr().out
    poses = json.loads((out / "poses.json").read_text())
    assert len(poses["frames"]) == 2
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert all(r["status"] in ("localized", "failed") for r in rows)
    assert not any("Error" in r["message"] for r in rows), rows
