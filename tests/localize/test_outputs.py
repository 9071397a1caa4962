"""The error plot and the console table of a localization run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from rich.console import Console

from crossfire_ns.localize.outputs import plot_errors, print_results_table
from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult
from tests.helpers import leftovers, pose, sample_results


def test_plot_errors_writes_png(tmp_path: Path):
    many = sample_results() + [
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
        plot_errors(path, sample_results())
    assert path.read_bytes() == b"old" and leftovers(tmp_path) == ["errors.png"]


def test_print_results_table():
    console = Console(record=True, width=200, file=io.StringIO())
    print_results_table(sample_results(), summarize(sample_results(), [(0.05, 1.0)]), console=console)
    text = console.export_text()
    for expected in ["images/a.png", "images/b.png", "unreadable", "only 3 inliers", "recall @ 0.05, 1 deg", "33.3%"]:
        assert expected in text
    console = Console(record=True, width=200, file=io.StringIO())
    print_results_table(sample_results(), summarize(sample_results()), console=console, max_rows=1)
    text = console.export_text()
    assert "images/a.png" in text and "images/b.png" not in text and "2 more" in text
