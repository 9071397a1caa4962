"""benchmarks.confidence report: the floors applied to recorded figures, per scene."""

import csv

from benchmarks.confidence import Report, Summary


def _write(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_report_counts_right_poses_kept_and_wrong_ones_still_reported(tmp_path):
    sure = {"refine_ratio": 0.85, "refine_coverage": 0.5, "centre_sigma": 0.001, "refine_contrast": 0.6}
    sure.update(centre_widening=1.0, second_pass=0, patches_held=1)
    rows = [
        {"scene": "a", "folder": "q", "file_path": "0.png", "status": "localized", "r_err": 0.2, "t_rel": 0.001, **sure},
        {"scene": "a", "folder": "q", "file_path": "1.png", "status": "localized", "r_err": 30.0, "t_rel": 0.3, **sure},
        {
            "scene": "a", "folder": "q", "file_path": "2.png", "status": "localized", "r_err": 40.0, "t_rel": 0.4,
            **{**sure, "refine_contrast": 0.05},
        },
        {
            "scene": "a", "folder": "q", "file_path": "3.png", "status": "localized", "r_err": 128.0, "t_rel": 3.9,
            **{**sure, "second_pass": 1, "patches_held": 0},
        },
        {"scene": "b", "folder": "q", "file_path": "0.png", "status": "failed", "r_err": "", "t_rel": "", **sure},
    ]  # fmt: skip
    _write(tmp_path / "f.csv", rows)
    counts = Report(files=[tmp_path / "f.csv"]).floors([r for r in rows if r["status"] == "localized"])
    assert counts["a"] == {"found": 4, "right": 1, "kept": 1, "wrong": 3, "reported": 1, "deg": 1}
    assert "b" not in counts


def test_summary_counts_failures_as_misses_and_applies_the_floors(tmp_path):
    sure = {"refine_ratio": 0.85, "refine_coverage": 0.5, "centre_sigma": 0.001, "refine_contrast": 0.6}
    sure.update(centre_widening=1.0, second_pass=0, patches_held=1)
    rows = [
        {"scene": "a", "folder": "q", "file_path": "0.png", "status": "localized", "r_err": 0.2, "t_rel": 0.001,
         "seconds": 1.0, **sure},
        {"scene": "a", "folder": "q", "file_path": "1.png", "status": "localized", "r_err": 30.0, "t_rel": 0.3,
         "seconds": 2.0, **sure},
        {"scene": "a", "folder": "p", "file_path": "2.png", "status": "failed", "r_err": "", "t_rel": "",
         "seconds": 4.0, **sure},
    ]  # fmt: skip
    _write(tmp_path / "f.csv", rows)
    lines = {line["folder"]: line for line in Summary(files=[tmp_path / "f.csv"]).main()}
    assert lines["q"]["median_deg"] == 15.1 and lines["q"]["within_2"] == 1 and lines["q"]["seconds"] == 1.5
    assert lines["q"]["right_kept"] == 1 and lines["q"]["wrong_reported"] == 1
    assert lines["p"]["median_deg"] == float("inf") and lines["p"]["wrong_reported"] == 0
    assert lines["all"]["n"] == 3 and lines["all"]["median_deg"] == 30.0 and lines["all"]["seconds"] == 2.0
