"""The covariance calibration report: shares inside the chi-square(6) ellipsoids and the scale that calibrates them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.covariance_calibration import (
    calibration,
    fit_widening,
    widening_factor,
    with_leave_one_out,
)
from crossfire_ns.localize.pnp import CALIBRATED, CHI2_6_MEDIAN, FIRST_ORDER, CovarianceWidening, mahalanobis_squared


def test_errors_drawn_from_the_covariance_fill_each_ellipsoid_to_its_level_and_need_no_scale():
    rng = np.random.default_rng(0)
    factor = rng.normal(0.0, 1.0, (6, 6))
    covariance = factor @ factor.T + np.eye(6)
    errors = rng.multivariate_normal(np.zeros(6), covariance, 4000)
    d2 = [mahalanobis_squared(e, covariance) for e in errors]
    result = calibration(d2)
    for level in (50, 90, 99):
        assert abs(result[f"inside_{level}"] - level / 100) < 0.02
        assert 0.9 < result[f"scale_{level}"] < 1.1


def test_an_overconfident_covariance_is_calibrated_by_the_scale_the_report_gives():
    rng = np.random.default_rng(1)
    d2 = np.sum(rng.normal(0.0, 1.0, (4000, 6)) ** 2, axis=1) * 9.0  # errors 3x the stated sigma
    raw = calibration(d2)
    assert raw["inside_90"] < 0.2 and 8.0 < raw["scale_50"] < 10.0
    scaled = calibration(d2, scale=raw["scale_50"])
    assert abs(scaled["inside_50"] - 0.5) < 0.01 and abs(scaled["inside_90"] - 0.9) < 0.03
    assert mahalanobis_squared(np.ones(6), np.zeros((6, 6))) == float("inf")


def test_fit_widening_recovers_the_widening_the_errors_were_drawn_with():
    rng = np.random.default_rng(2)
    truth = CovarianceWidening(scale=3.0, knee_px=0.4, error_exponent=2.5)
    rows = []
    for _ in range(3000):
        error_px = float(rng.uniform(0.1, 1.5))
        d2 = float(np.sum(rng.normal(0.0, 1.0, 6) ** 2)) * truth.factor(error_px)
        rows.append({"d2": d2, "reprojection_error_px": error_px, "num_inliers": 300})
    fitted = fit_widening(rows)
    for error_px in (0.1, 0.4, 1.0, 1.5):  # the same factor where the records lie, whatever the parameters
        assert abs(fitted.factor(error_px) / truth.factor(error_px) - 1.0) < 0.2
    widened = [row["d2"] / fitted.factor(row["reprojection_error_px"]) for row in rows]
    assert abs(calibration(widened)["inside_90"] - 0.9) < 0.03


def test_fit_widening_refuses_too_few_records_and_a_report_needs_the_error_figure():
    with pytest.raises(ValueError, match="too few"):
        fit_widening([{"d2": 1.0, "reprojection_error_px": 0.3, "num_inliers": 100}] * 3)
    with pytest.raises(ValueError, match="collect it again"):
        widening_factor({"d2": 1.0, "num_inliers": 100, "dir": "q", "file": "a.png"}, CALIBRATED)
    assert widening_factor({"d2": 1.0, "num_inliers": 100, "dir": "q", "file": "a.png"}, FIRST_ORDER) == 1.0


def _map_records(rng, truth: CovarianceWidening, maps: dict, per_map: int) -> list:
    """Records of maps whose poses are ``truth`` wide, each map's with its own extra ratio; each map carries 16
    leave-one-out records drawn the same way (its own training views)."""
    rows = []
    for name, ratio in maps.items():
        loo = []
        for _ in range(16):
            error_px = float(rng.uniform(0.1, 0.5))
            loo.append([float(np.sum(rng.normal(0.0, 1.0, 6) ** 2)) * truth.query_share(error_px) * ratio, error_px])
        for _ in range(per_map):
            error_px = float(rng.uniform(0.1, 1.5))
            d2 = float(np.sum(rng.normal(0.0, 1.0, 6) ** 2)) * truth.factor(error_px, ratio)
            rows.append({"map": name, "d2": d2, "reprojection_error_px": error_px, "leave_one_out": loo})
    return rows


def test_fit_widening_with_leave_one_out_calibrates_maps_whose_depth_widens_their_poses():
    rng = np.random.default_rng(3)
    truth = CovarianceWidening(scale=1.0, knee_px=0.4, error_exponent=2.5, map_exponent=1.0, map_floor=0.0)
    rows = _map_records(rng, truth, {f"map{i}": ratio for i, ratio in enumerate((0.7, 1.0, 2.0, 4.0, 8.0))}, 300)
    without_map = fit_widening([{k: v for k, v in row.items() if k != "leave_one_out"} for row in rows])
    fitted = fit_widening(rows)
    assert fitted.map_exponent > 0.5 and without_map.map_exponent == 0.0
    for name in ("map0", "map4"):  # each map calibrated on its own, which one scale for all cannot do
        members = [row for row in rows if row["map"] == name]
        shares = calibration([row["d2"] / widening_factor(row, fitted) for row in members])
        assert abs(shares["inside_90"] - 0.9) < 0.08
    widest = [row for row in rows if row["map"] == "map4"]
    assert calibration([row["d2"] / widening_factor(row, without_map) for row in widest])["inside_90"] < 0.75


def test_a_report_with_the_map_term_needs_the_maps_leave_one_out_and_takes_it_from_a_file(tmp_path):
    widening = CovarianceWidening(scale=2.0, knee_px=0.25, error_exponent=2.6, map_exponent=1.0)
    row = {"map": "m/config.yml", "d2": 1.0, "reprojection_error_px": 0.25, "dir": "q", "file": "a.png"}
    with pytest.raises(ValueError, match="leave-one-out"):
        widening_factor(row, widening)
    loo = tmp_path / "loo.json"
    loo.write_text(json.dumps({"m/config.yml": [[CHI2_6_MEDIAN * 2.0 * 3.0, 0.25]] * 4}))
    (filled,) = with_leave_one_out([row], [loo])
    assert widening_factor(filled, widening) == pytest.approx(4.0 * 3.0)
