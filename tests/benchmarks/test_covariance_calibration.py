"""The covariance calibration report: shares inside the chi-square(6) ellipsoids and the scale that calibrates them."""

from __future__ import annotations

import numpy as np

from benchmarks.covariance_calibration import calibration, mahalanobis_squared


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
