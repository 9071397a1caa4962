"""summarize() on hand-made results."""

from __future__ import annotations

import json

import pytest

from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult


def hand_made():
    return [
        QueryResult("a.png", "localized", t_err=0.01, r_err=0.5, seconds=1.0, has_gt=True),
        QueryResult("b.png", "localized", t_err=0.03, r_err=1.5, seconds=2.0, has_gt=True),
        QueryResult("c.png", "localized", t_err=0.20, r_err=0.8, seconds=3.0, has_gt=True),
        QueryResult("d.png", "localized", t_err=0.50, r_err=12.0, seconds=4.0, has_gt=True),
        QueryResult("e.png", "failed", seconds=10.0, has_gt=True),
        QueryResult("f.png", "unreadable", seconds=0.0, has_gt=True),
    ]


def test_counts_medians_and_recalls():
    summary = summarize(hand_made(), thresholds=[(0.05, 2.0), (0.25, 1.0), (1.0, 20.0)])
    assert (summary["num_queries"], summary["num_localized"], summary["num_failed"], summary["num_unreadable"]) == (
        6,
        4,
        1,
        1,
    )
    assert summary["num_with_gt"] == 6 and summary["num_evaluated"] == 4
    assert summary["median_translation_error"] == pytest.approx(0.115)
    assert summary["mean_translation_error"] == pytest.approx(0.185)
    assert summary["median_rotation_error_deg"] == pytest.approx(1.15)
    assert summary["mean_rotation_error_deg"] == pytest.approx(3.7)
    recalls = [(r["translation"], r["rotation_deg"], r["recall"], r["hits"]) for r in summary["recall"]]
    # (0.05, 2): a, b. (0.25, 1): a, c (b's rotation 1.5 > 1). (1, 20): all four localized. Failed ones count.
    assert recalls == [
        (0.05, 2.0, pytest.approx(2 / 6), 2),
        (0.25, 1.0, pytest.approx(2 / 6), 2),
        (1.0, 20.0, pytest.approx(4 / 6), 4),
    ]
    # seconds over the five attempted queries (the unreadable one was not attempted)
    assert summary["median_seconds"] == pytest.approx(3.0)
    assert summary["mean_seconds"] == pytest.approx(4.0)
    json.dumps(summary, allow_nan=False)  # JSON-ready


def test_thresholds_are_inclusive():
    summary = summarize(hand_made(), thresholds=[(0.03, 1.5)])
    assert summary["recall"][0]["hits"] == 2


def test_accepts_dicts():
    dicts = [r.to_dict() for r in hand_made()]
    assert summarize(dicts, [(0.05, 2.0)]) == summarize(hand_made(), [(0.05, 2.0)])
    # dicts without has_gt: ground truth is inferred from the errors
    plain = [{"file_path": "x.png", "status": "localized", "t_err": 0.1, "r_err": 1.0, "seconds": 1.0}]
    assert summarize(plain, [(0.2, 2.0)])["recall"][0]["recall"] == 1.0


def test_without_ground_truth():
    results = [
        QueryResult("a.png", "localized", seconds=1.0),
        QueryResult("b.png", "failed", seconds=3.0),
    ]
    summary = summarize(results, thresholds=[(0.1, 1.0)])
    assert summary["num_with_gt"] == 0 and summary["num_localized"] == 1
    assert summary["median_translation_error"] is None and summary["mean_rotation_error_deg"] is None
    assert summary["recall"][0]["recall"] is None
    assert summary["median_seconds"] == pytest.approx(2.0)


def test_nothing_localized():
    results = [
        QueryResult("a.png", "failed", seconds=1.0, has_gt=True),
        QueryResult("b.png", "unreadable", has_gt=True),
    ]
    summary = summarize(results, thresholds=[(0.1, 1.0)])
    assert summary["num_localized"] == 0
    assert summary["median_translation_error"] is None
    assert summary["recall"][0]["recall"] == 0.0
    assert summary["median_seconds"] == pytest.approx(1.0)


def test_empty():
    summary = summarize([], thresholds=[(0.1, 1.0)])
    assert summary["num_queries"] == 0
    assert summary["median_seconds"] is None and summary["recall"][0]["recall"] is None


def test_bad_status_rejected():
    with pytest.raises(ValueError, match="status"):
        QueryResult("a.png", "lost")


def test_medians_over_all_queries_count_failures_as_infinite():
    summary = summarize(hand_made(), thresholds=[(0.05, 2.0)])
    # six with ground truth: 0.01, 0.03, 0.20, 0.50, inf, inf -> median (0.20 + 0.50) / 2
    assert summary["median_translation_error_all"] == pytest.approx(0.35)
    assert summary["median_rotation_error_deg_all"] == pytest.approx((1.5 + 12.0) / 2)
    mostly_failed = hand_made()[3:] + [QueryResult("g.png", "failed", has_gt=True)]
    summary = summarize(mostly_failed)
    assert summary["median_translation_error_all"] == "inf" and summary["median_rotation_error_deg_all"] == "inf"
    json.dumps(summary, allow_nan=False)
    assert summarize([QueryResult("a.png", "localized")])["median_translation_error_all"] is None


def test_confidently_wrong_uses_the_loosest_recall_threshold():
    # loosest threshold (0.25, 5 deg): d is 12 deg off and c 0.20 within it -> one of six
    summary = summarize(hand_made(), thresholds=[(0.05, 1.0), (0.25, 5.0)])
    assert summary["num_confidently_wrong"] == 1 and summary["confidently_wrong"] == pytest.approx(1 / 6)
    assert summary["confidently_wrong_threshold"] == {"translation": 0.25, "rotation_deg": 5.0}
    # a tighter translation bound catches c (0.20) and d (0.50) as well; failures never count
    assert summarize(hand_made(), wrong_threshold=(0.1, 5.0))["num_confidently_wrong"] == 2
    # without thresholds: 5 deg only
    bare = summarize(hand_made())
    assert bare["num_confidently_wrong"] == 1 and bare["confidently_wrong_threshold"]["translation"] is None


def test_stage_seconds_and_renders():
    results = [
        QueryResult("a.png", "localized", seconds=10.0, num_renders=4, seconds_retrieval=1.0, seconds_coarse=3.0,
                    seconds_refine=5.0),
        QueryResult("b.png", "failed", seconds=6.0, num_renders=2, seconds_retrieval=1.0, seconds_coarse=2.0),
        QueryResult("c.png", "localized", seconds=4.0, num_renders=8, seconds_retrieval=2.0, seconds_coarse=1.0,
                    seconds_refine=0.5),
        QueryResult("d.png", "unreadable", seconds=0.0, num_renders=99),
    ]  # fmt: skip
    summary = summarize(results)
    assert summary["median_seconds_retrieval"] == pytest.approx(1.0)
    assert summary["median_seconds_coarse"] == pytest.approx(2.0)
    assert summary["median_seconds_refine"] == pytest.approx(0.5)
    assert summary["median_seconds_other"] == pytest.approx(1.0)  # 1.0, 3.0, 0.5
    assert summary["median_renders"] == pytest.approx(4.0)  # the unreadable query is not counted
    # records without stage fields (older results, dicts): all time is "other"
    plain = summarize([{"file_path": "x.png", "status": "localized", "seconds": 3.0}])
    assert plain["median_seconds_other"] == pytest.approx(3.0) and plain["median_seconds_refine"] == 0.0
