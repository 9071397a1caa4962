"""benchmarks.report: rows from summaries, the markdown/CSV table, the CDF plot, the BENCHMARKS.md section."""

import csv
import math

import numpy as np
import pytest

from benchmarks import report
from crossfire_ns.io.atomic import write_csv_atomic
from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult

EXTENT = 10.0
RELATIVE = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))


def _summary(errors, failed=0):
    results = [
        QueryResult(f"q{i}", "localized", t_err=t, r_err=r, has_gt=True, seconds=2.0) for i, (t, r) in enumerate(errors)
    ]
    results += [
        QueryResult(f"f{i}", "failed", has_gt=True, seconds=1.0, message="only 3 inliers") for i in range(failed)
    ]
    summary = summarize(results, [(f * EXTENT, d) for f, d in RELATIVE])
    summary["recall_thresholds_relative"] = [list(t) for t in RELATIVE]
    return summary, results


def test_summary_row_reads_recalls_at_relative_thresholds():
    summary, _ = _summary([(0.05, 0.5), (0.15, 1.5), (0.4, 4.0)], failed=1)
    row = report.summary_row("fox", "lighting", "crossfire", summary, 120.0, "cpu (2 cores)", EXTENT)
    assert (row["num_queries"], row["num_localized"]) == (4, 3)
    assert (row["recall_1"], row["recall_2"], row["recall_5"]) == (0.25, 0.5, 0.75)
    assert row["median_translation_error_pct"] == pytest.approx(1.5)
    assert row["median_rotation_error_deg"] == pytest.approx(1.5)
    assert row["seconds_per_query"] == pytest.approx(2.0) and row["map_seconds"] == 120.0
    failed = report.summary_row("fox", "lighting", "sift", None, 120.0, "cpu", EXTENT, message="exit code 1")
    assert failed["status"] == "failed" and failed["num_queries"] is None


def test_markdown_table_and_csv(tmp_path):
    summary, _ = _summary([(0.05, 0.5)])
    rows = [
        report.summary_row("lego", "original", "sfm-sift", summary, 3.2, "cpu (pycolmap)", EXTENT),
        report.summary_row("lego", "original", "crossfire", None, 60.0, "cpu", EXTENT, "failed", "boom | bang\nmore"),
    ]
    table = report.markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| scene |")
    assert all(line.count("|") == 17 for line in lines)
    assert "1/1" in lines[2] and "0.05 (0.5%)" in lines[2] and "100%" in lines[2]
    assert "| 0.5% / 0.5 |" in lines[2] and "| 0% (0) |" in lines[2]
    assert "failed: boom / bang" in lines[3] and "more" not in lines[3]
    csv_path, md_path = report.write_tables(tmp_path, rows)
    with open(csv_path, newline="") as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == list(report.COLUMNS) and read[1]["status"] == "failed"
    assert md_path.read_text().strip() == table


def test_query_errors_count_failures_as_infinite(tmp_path):
    _, results = _summary([(0.1, 1.0), (0.2, 2.0)], failed=1)
    rows = [{k: v for k, v in r.to_dict().items() if k != "c2w"} for r in results]
    write_csv_atomic(tmp_path / "results.csv", rows)
    t_err, r_err = report.query_errors(tmp_path / "results.csv")
    assert t_err[:2].tolist() == [0.1, 0.2] and math.isinf(t_err[2]) and math.isinf(r_err[2])


def test_error_cdf_plot_is_written(tmp_path):
    curves = {
        "fox": {
            ("crossfire", "original"): (np.array([1.0, np.inf]), np.array([2.0, np.inf])),
            ("sfm-sift", "lighting"): (np.array([0.1, 0.3]), np.array([0.05, 0.2])),
            ("prior", "original"): (np.array([np.inf]), np.array([np.inf])),
        },
        "lego": {("crossfire", "original"): (np.zeros(0), np.zeros(0))},
    }
    path = report.plot_error_cdfs(tmp_path / "cdf.png", curves, ("original", "lighting"), ("crossfire", "sfm-sift"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_crossfire_losses_name_the_winner_and_the_reason():
    good, _ = _summary([(0.01, 0.1)] * 3)
    bad, _ = _summary([(3.0, 40.0)], failed=2)
    far, _ = _summary([(3.0, 30.0)] * 3)  # all localized, all far off: not better than failing
    rows = [
        report.summary_row("fern", "original", "crossfire", bad, 1.0, "cpu", EXTENT),
        report.summary_row("fern", "original", "sfm-sift", good, 1.0, "cpu", EXTENT),
        report.summary_row("fern", "original", "prior", bad, 1.0, "cpu", EXTENT),
        report.summary_row("fern", "original", "photometric", far, 1.0, "cpu", EXTENT),
        report.summary_row("lego", "original", "crossfire", good, 1.0, "cpu", EXTENT),
        report.summary_row("lego", "original", "prior", bad, 1.0, "cpu", EXTENT),
    ]
    curves = {
        "fern": {
            ("crossfire", "original"): (np.array([30.0, np.inf, np.inf]), np.array([40.0, np.inf, np.inf])),
            ("sfm-sift", "original"): (np.full(3, 0.1), np.full(3, 0.1)),
            ("prior", "original"): (np.array([30.0, np.inf, np.inf]), np.array([40.0, np.inf, np.inf])),
            ("photometric", "original"): (np.full(3, 30.0), np.full(3, 30.0)),
        },
        "lego": {
            ("crossfire", "original"): (np.full(3, 0.1), np.full(3, 0.1)),
            ("prior", "original"): (np.array([30.0]), np.array([40.0])),
        },
    }
    bullets = report.crossfire_losses(rows, curves, {("fern", "original"): "only 3 inliers (2 of 2 failures)"})
    assert len(bullets) == 1
    assert "fern, original" in bullets[0] and "sfm-sift" in bullets[0]
    assert "prior" not in bullets[0] and "photometric" not in bullets[0]
    assert "only 3 inliers" in bullets[0]


def test_marked_section_is_replaced_or_appended():
    text = "# Benchmarks\n\nintro\n"
    first = report.replace_marked_section(text, "table one")
    assert first.startswith(text.rstrip("\n")) and report.SECTION_HEADING in first and "table one" in first
    second = report.replace_marked_section(first + "\nprose after\n", "table two")
    assert "table one" not in second and "table two" in second and second.endswith("prose after\n")
    assert second.count(report.SECTION_HEADING) == 1
    gpu = report.replace_marked_section(second, "gpu table", name="bench-table-gpu", heading="### GPU")
    assert "table two" in gpu and gpu.index("table two") < gpu.index("gpu table")
    start, _ = report.markers()
    with pytest.raises(ValueError, match="only one of the markers"):
        report.replace_marked_section(f"x\n{start}\n", "body")


def test_rows_are_sorted_in_the_given_orders():
    rows = [{"scene": s, "condition": c, "method": m} for s in ("b", "a") for c in ("y", "x") for m in ("n", "m")]
    ordered = report.iter_rows(rows, ["a", "b"], ["x", "y"], ["m", "n"])
    assert [(r["scene"], r["condition"], r["method"]) for r in ordered[:3]] == [
        ("a", "x", "m"),
        ("a", "x", "n"),
        ("a", "y", "m"),
    ]


def test_rows_show_honest_medians_confidently_wrong_and_stage_timing():
    results = [
        QueryResult("a", "localized", t_err=0.05, r_err=0.5, has_gt=True, seconds=4.0, num_renders=6,
                    seconds_retrieval=0.5, seconds_coarse=1.5, seconds_refine=1.0),
        QueryResult("b", "localized", t_err=0.1, r_err=40.0, has_gt=True, seconds=4.0, num_renders=6,
                    seconds_retrieval=0.5, seconds_coarse=1.5, seconds_refine=1.0),
        QueryResult("c", "failed", has_gt=True, seconds=4.0, num_renders=6),
    ]  # fmt: skip
    summary = summarize(results, [(f * EXTENT, d) for f, d in RELATIVE])
    summary["recall_thresholds_relative"] = [list(t) for t in RELATIVE]
    row = report.summary_row("room", "blur", "crossfire", summary, 1.0, "cpu", EXTENT)
    assert row["median_rotation_error_deg_all"] == 40.0 and row["num_confidently_wrong"] == 1
    line = report.markdown_table([row]).splitlines()[2]
    assert "| 1% / 40 |" in line and "| 33% (1) |" in line  # median over all: 0.1 of 10 and 40 deg
    assert "| 0.5 / 1.5 / 1 / 1 |" in line and "| 6 |" in line  # stages (other = 4 - 3), renders
    failing = summarize(results[2:], [(f * EXTENT, d) for f, d in RELATIVE])
    failing["recall_thresholds_relative"] = [list(t) for t in RELATIVE]
    assert "| inf% / inf |" in report.markdown_table([report.summary_row("r", "o", "prior", failing, 1.0, "c", EXTENT)])


def test_metric_protocol_rows_get_their_own_table_in_cm():
    summary = summarize(
        [QueryResult("a", "localized", t_err=0.03, r_err=1.0, has_gt=True, seconds=1.0)] * 2
        + [QueryResult("b", "localized", t_err=0.3, r_err=1.0, has_gt=True, seconds=1.0)],
        [(f * 1.0, d) for f, d in RELATIVE],
    )
    summary["recall_thresholds_relative"] = [list(t) for t in RELATIVE]
    rows = [
        report.summary_row("fox", "original", "crossfire", summary, 1.0, "cpu", EXTENT),
        report.summary_row("7scenes-stairs", "original", "sfm-sift", summary, 1.0, "cpu", 1.0, protocol="metric"),
    ]
    tables = report.markdown_table(rows).split("\n\n")
    assert len(tables) == 2 and "median translation error (cm)" in tables[1].splitlines()[0]
    metric = tables[1].splitlines()[2]
    assert metric.startswith("| 7scenes-stairs |") and "| 3 |" in metric and "| 67% |" in metric  # 3 cm, 2 of 3 in 5 cm
    assert "7scenes" not in tables[0]


def test_standing_table_puts_crossfire_beside_the_better_peer():
    good, _ = _summary([(0.05, 0.5), (0.1, 0.4)])
    worse, _ = _summary([(0.05, 0.9)], failed=1)
    wrong, _ = _summary([(0.05, 0.3), (3.0, 30.0)])
    wrong["num_confidently_wrong"] = 1
    rows = [
        report.summary_row("fox", "original", "crossfire", wrong, 250.0, "cpu", EXTENT),
        report.summary_row("fox", "original", "sfm-sift", worse, 3.0, "cpu", EXTENT),
        report.summary_row("fox", "original", "sfm-sift-lowpeak", good, 3.0, "cpu", EXTENT),
        report.summary_row("fox", "original", "prior", good, 250.0, "cpu", EXTENT),
        report.summary_row("fox", "blur", "crossfire", None, 250.0, "cpu", EXTENT, message="boom"),
    ]
    lines = report.standing_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| scene | condition | crossfire")
    assert "| fox | original |" in lines[2] and "(sfm-sift-lowpeak)" in lines[2]  # the better peer, not the prior
    assert "**1 wrong**" in lines[2] and "| 250 |" in lines[2]
    assert "| fox | blur | failed | - | 250 |" in lines[3]
