"""Atomic writers: strict JSON, CSV, and nothing half-written when a write fails."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from crossfire_ns.io import atomic
from crossfire_ns.io.atomic import write_csv_atomic, write_json_atomic
from tests.helpers import leftovers, pose, sample_results


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

    monkeypatch.setattr(atomic.json, "dump", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_json_atomic(tmp_path / "out.json", {"a": 1})
    assert leftovers(tmp_path) == []


def test_failed_json_rewrite_keeps_previous_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "out.json"
    write_json_atomic(path, {"version": 1})

    def half_then_fail(obj, handle, **kwargs):
        handle.write('{"version": 2, "trunc')
        raise KeyboardInterrupt  # even an interrupt must not leave a half-written file

    monkeypatch.setattr(atomic.json, "dump", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"version": 2})
    assert json.loads(path.read_text()) == {"version": 1}
    assert leftovers(tmp_path) == ["out.json"]


def test_csv_round_trip_and_failure(tmp_path: Path, monkeypatch):
    path = tmp_path / "rows.csv"
    rows = [r.to_dict() for r in sample_results()]
    write_csv_atomic(path, rows)
    with path.open(newline="") as handle:
        read = list(csv.DictReader(handle))
    assert [r["file_path"] for r in read] == ["images/a.png", "images/b.png", "images/c.png"]
    assert read[0]["num_inliers"] == "120" and read[1]["t_err"] == ""
    np.testing.assert_allclose(json.loads(read[0]["c2w"]), pose(1.0))

    def boom(self, row):
        raise OSError("no space")

    monkeypatch.setattr(atomic.csv.DictWriter, "writerow", boom)
    with pytest.raises(OSError):
        write_csv_atomic(path, [{"file_path": "z"}])
    assert path.read_text().count("images/") == 3  # previous content intact
    assert leftovers(tmp_path) == ["rows.csv"]


def test_results_csv_round_trips_to_query_results(tmp_path: Path):
    from crossfire_ns.localize.outputs import RESULT_COLUMNS
    from crossfire_ns.results import QueryResult

    path = tmp_path / "results.csv"
    results = sample_results()
    write_csv_atomic(path, [r.to_dict() for r in results], fieldnames=RESULT_COLUMNS)
    with path.open(newline="") as handle:
        back = [QueryResult.from_csv_row(row) for row in csv.DictReader(handle)]
    for original, parsed in zip(results, back):
        assert parsed.to_dict() == original.to_dict()
