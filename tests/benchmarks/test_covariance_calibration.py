"""The covariance calibration report: shares inside the chi-square(6) ellipsoids and the scale that calibrates them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.covariance_calibration import calibration, fit_widening, mahalanobis_squared, widening_factor
from crossfire_ns.localize.pnp import CALIBRATED, FIRST_ORDER, CovarianceWidening


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
