"""Atomic writers, the nerfstudio-format poses file, the error plot and the console table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from rich.console import Console

from crossfire_ns.localize import outputs
from crossfire_ns.localize.metrics import summarize
from crossfire_ns.localize.outputs import (
    plot_errors,
    print_results_table,
    read_poses_json,
    write_csv_atomic,
    write_json_atomic,
    write_poses_json,
)
from crossfire_ns.localize.queries import QueryImage
from crossfire_ns.localize.results import QueryResult


def pose(x: float) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, 3] = [x, 2.0, -1.0]
    return c2w


def results():
    return [
        QueryResult("images/a.png", "localized", pose(1.0), 120, 300, 0.8, 1.5, "localized", 0.02, 0.4, True),
        QueryResult(
            "images/b.png", "failed", None, 3, 40, None, 2.5, "only 3 inliers, need at least 12", None, None, True
        ),
        QueryResult("images/c.png", "unreadable", message="cannot be read", has_gt=True),
    ]


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_atomic_and_strict(tmp_path: Path):
    path = tmp_path / "sub" / "out.json"
    write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), "d": Path("x/y")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": "x/y"}
    assert leftovers(path.parent) == ["out.json"]
    reference = tmp_path / "plain.txt"
    reference.write_text("x")  # same permissions as a file written with open()
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_failed_json_write_leaves_no_file(tmp_path: Path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert leftovers(tmp_path) == []


def test_failed_json_rewrite_keeps_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "out.json"
    write_json_atomic(path, {"version": 1})

    def half_then_fail(obj, handle, **kwargs):
        handle.write('{"version": 2, "trunc')
        raise KeyboardInterrupt  # even an interrupt must not leave a half-written file

    monkeypatch.setattr(outputs.json, "dump", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert leftovers(tmp_path) == ["out.json"]


def test_csv_round_trip_and_failure(tmp_path: Path, monkeypatch):
    path = tmp_path / "rows.csv"
    rows = [r.to_dict() for r in results()]
    write_csv_atomic(path, rows)
    with path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [r["file_path"] for r in read] == ["images/a.png", "images/b.png", "images/c.png"]
    assert read[0]["num_inliers"] == "120" and read[1]["t_err"] == ""
    np.testing.assert_allclose(json.loads(read[0]["c2w"]), pose(1.0))

    def boom(self, row):
        raise OSError("no space")

    monkeypatch.setattr(outputs.csv.DictWriter, "writerow", boom)
    with pytest.raises(OSError):
        write_csv_atomic(path, [{"file_path": "z"}])
    assert path.read_text().count("images/") == 3  # previous content intact
    assert leftovers(tmp_path) == ["rows.csv"]


def test_poses_json_is_nerfstudio_format(tmp_path: Path):
    K = np.array([[50.0, 0, 20.0], [0, 51.0, 15.0], [0, 0, 1]])
    queries = [
        QueryImage(
            Path("q/images/a.png"),
            "images/a.png",
            K,
            np.array([0.1, 0.0, 0.0, 0.0, 0.0]),
            40,
            30,
            camera_model="OPENCV",
        ),
        QueryImage(Path("q/images/b.png"), "images/b.png", K, None, 40, 30),
        QueryImage(Path("q/images/c.png"), "images/c.png"),
    ]
    path = tmp_path / "poses.json"
    write_poses_json(path, results(), queries, metadata={"model": "crossfire"})
    data = json.loads(path.read_text())
    assert data["metadata"] == {"model": "crossfire"}
    frames = data["frames"]
    assert [f["file_path"] for f in frames] == ["images/a.png", "images/b.png", "images/c.png"]
    assert [f["status"] for f in frames] == ["localized", "failed", "unreadable"]
    np.testing.assert_allclose(frames[0]["transform_matrix"], pose(1.0))
    assert frames[1]["transform_matrix"] is None and frames[2]["transform_matrix"] is None
    assert frames[0]["num_inliers"] == 120 and frames[0]["seconds"] == 1.5
    assert (frames[0]["fl_x"], frames[0]["cy"], frames[0]["w"], frames[0]["k1"]) == (50.0, 15.0, 40, 0.1)
    assert frames[1]["camera_model"] == "PINHOLE" and "k1" not in frames[1]
    assert "fl_x" not in frames[2]
    poses = read_poses_json(path)
    assert list(poses) == ["images/a.png"]
    np.testing.assert_allclose(poses["images/a.png"], pose(1.0))


def test_plot_errors_writes_png(tmp_path: Path):
    many = results() + [
        QueryResult(f"x{i}.png", "localized", pose(i), t_err=0.01 * i, r_err=0.1 * i, has_gt=True) for i in range(10)
    ]
    path = tmp_path / "errors.png"
    plot_errors(path, many, thresholds=[(0.05, 1.0)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_errors(tmp_path / "nogt.png", [QueryResult("a.png", "localized", pose(0))])  # no ground truth: no crash
    assert (tmp_path / "nogt.png").stat().st_size > 0
    assert leftovers(tmp_path) == ["errors.png", "nogt.png"]


def test_failed_plot_keeps_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "errors.png"
    path.write_bytes(b"old")

    def boom(self, *args, **kwargs):
        raise ValueError("render failed")

    monkeypatch.setattr(Figure, "savefig", boom)
    with pytest.raises(ValueError):
        plot_errors(path, results())
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == ["errors.png"]


def test_print_results_table():
    console = Console(record=True, width=200, file=io.StringIO())
    print_results_table(results(), summarize(results(), [(0.05, 1.0)]), console=console)
    text = console.export_text()
    for expected in ["images/a.png", "images/b.png", "unreadable", "only 3 inliers", "recall @ 0.05, 1 deg", "33.3%"]:
        assert expected in text
    console = Console(record=True, width=200, file=io.StringIO())
    print_results_table(results(), summarize(results()), console=console, max_rows=1)
    text = console.export_text()
    assert "images/a.png" in text and "images/b.png" not in text and "2 more" in text
