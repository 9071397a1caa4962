"""The verdict: one decision from typed evidence, naming every floor that doubts a pose."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossfire_ns.localize.pnp import QUERY_SHARE
from crossfire_ns.localize.refine import RefineConfig
from crossfire_ns.localize.verify import (
    Evidence,
    VerifyConfig,
    centre_widening,
    held_out_agreement,
    shift_contrast,
    verdict,
)
from crossfire_ns.synthetic.cameras import look_at
from tests.localize.stub_index import D, K, query_features, scene, stub_index


def test_the_verdict_names_every_floor_a_pose_misses():
    config = VerifyConfig()
    assert verdict(Evidence(0.85, 0.5, 0.001, 0.6), config).confirmed
    doubted = verdict(Evidence(0.5, 0.1, 0.05, 0.1), config)
    assert doubted.status == "doubted" and len(doubted.floors) == 4
    for name in ("confidence", "coverage", "camera centre", "contrast"):
        assert name in doubted.reason
    assert verdict(Evidence(0.5, 0.1, 0.05, 0.1), config.without_floors()).confirmed


def test_figures_that_could_not_be_computed_are_named_and_missing_ones_are_an_error():
    unchecked = verdict(Evidence(0.85, 0.5, math.nan, math.nan), VerifyConfig())
    assert unchecked.confirmed and unchecked.unchecked == ("centre_sigma", "contrast")
    with pytest.raises(ValueError, match="confidence"):
        Evidence(math.nan, 0.5, 0.001, 0.6)
    with pytest.raises(KeyError, match="refine_contrast"):
        Evidence.from_figures({"refine_ratio": 0.8, "refine_coverage": 0.5, "centre_sigma": 0.001})
    recorded = {"refine_ratio": 0.8, "refine_coverage": 0.5, "centre_sigma": 0.001, "refine_contrast": 0.6}
    with pytest.raises(KeyError, match="centre_widening, second_pass, patches_held"):
        Evidence.from_figures(recorded)
    recorded.update(centre_widening=1.5, second_pass=1.0, patches_held=0.0)
    got = Evidence.from_figures(recorded)
    assert math.isnan(got.patch_centre_sigma)  # none recorded: the patch rounds' pose was not taken
    assert replace(got, patch_centre_sigma=0.0) == Evidence(
        0.8, 0.5, 0.001, 0.6, centre_widening=1.5, second_pass=True, patches_held=False, patch_centre_sigma=0.0
    )
    assert Evidence.from_figures(recorded | {"patch_centre_sigma": 0.004}).patch_centre_sigma == 0.004


def test_the_centre_floor_reads_the_patch_rounds_where_they_held():
    """The pose reported is the patch rounds': where they held, their inliers judge its centre."""
    config = VerifyConfig()
    held = Evidence(0.9, 0.5, 0.015, 0.6, patch_centre_sigma=0.004)
    assert verdict(held, config).confirmed
    assert held.judged_centre_sigma(config) == 0.004
    doubted = verdict(held, replace(config, centre_from_patches=False))  # the refinement's CNN rounds judge it
    assert doubted.status == "doubted" and "camera centre within 0.015" in doubted.reason
    assert verdict(Evidence(0.9, 0.5, 0.015, 0.6), config).status == "doubted"  # no patch pose: the refinement's
    wide = Evidence(0.9, 0.5, 0.001, 0.6, patch_centre_sigma=0.012)  # loose patches doubt a tight refinement too
    assert verdict(wide, config).status == "doubted"
    blurred = Evidence(0.9, 0.5, 0.015, 0.6, patch_centre_sigma=0.006, centre_widening=2.0)
    assert blurred.judged_centre_sigma(config) == pytest.approx(0.012) and not verdict(blurred, config).confirmed


def test_the_centre_floor_reads_the_centre_widened_as_the_covariance_is_for_a_poor_query():
    assert centre_widening(0.1) == centre_widening(QUERY_SHARE.knee_px) == 1.0  # sharp queries judged as before
    assert 4.0 < centre_widening(1.1) < 6.0  # a blurred query's inliers reproject 1.1 px off
    config = VerifyConfig()
    assert verdict(Evidence(0.85, 0.5, 0.006, 0.6, centre_widening=1.0), config).confirmed
    doubted = verdict(Evidence(0.85, 0.5, 0.006, 0.6, centre_widening=centre_widening(1.1)), config)
    assert doubted.status == "doubted" and "camera centre within 0.0" in doubted.reason
    assert verdict(Evidence(0.85, 0.5, 0.006, 0.6, centre_widening=5.0), replace(config, widen_centre=False)).confirmed


def test_a_pose_of_the_second_pass_must_hold_the_first_patch_round():
    """More hypotheses tried, more chances for a wrong pose to pass the other floors: a second-pass pose needs the
    patches too; a first-pass pose whose patches fail (blur, low light) is judged by the other floors alone."""
    config = VerifyConfig()
    assert verdict(Evidence(0.85, 0.5, 0.001, 0.6, second_pass=False, patches_held=False), config).confirmed
    assert verdict(Evidence(0.85, 0.5, 0.001, 0.6, second_pass=True, patches_held=True), config).confirmed
    doubted = verdict(Evidence(0.85, 0.5, 0.001, 0.6, second_pass=True, patches_held=False), config)
    assert doubted.status == "doubted" and "first patch round" in doubted.reason
    assert verdict(
        Evidence(0.85, 0.5, 0.001, 0.6, second_pass=True, patches_held=False), config.without_floors()
    ).confirmed


def test_shift_contrast_is_high_for_aligned_features_and_low_for_unrelated_ones():
    rng = torch.Generator().manual_seed(0)
    smooth = F.normalize(F.avg_pool2d(torch.randn(1, D, 40, 60, generator=rng), 3, 1, 1)[0], dim=0)
    valid = torch.ones(40, 60, dtype=torch.bool)
    aligned = shift_contrast(smooth, smooth, valid, 1.0, 3)
    other = F.normalize(F.avg_pool2d(torch.randn(1, D, 40, 60, generator=rng), 3, 1, 1)[0], dim=0)
    unrelated_median = float((smooth * other).sum(0).median())
    unrelated = shift_contrast(smooth, other, valid, unrelated_median, 3)
    assert aligned > 0.9
    assert abs(unrelated) < 0.1


def test_views_held_out_of_the_fit_agree_with_the_right_pose_and_not_with_a_shifted_one():
    points, descriptors, _, truth = scene()
    views = [look_at([x, 0, z], [0, 4, 0]) for x, z in [(0.0, 0.0), (0.1, 0.05), (-0.4, 0.1), (0.5, -0.1)]]
    query = query_features(points, descriptors, truth)
    index, config = stub_index(points, descriptors, views), RefineConfig(views=2)
    right = held_out_agreement(index, query, K, truth, 3.0, config, 0.9)
    assert right["holdout_coverage"] > 0.8 and right["holdout_ratio"] > 0.9
    shifted = truth.copy()
    shifted[:3, 3] += [0.15, 0.0, 0.1]  # about 4 px at the points: beyond a 3 px search
    wrong = held_out_agreement(index, query, K, shifted, 3.0, config, 0.9)
    assert wrong["holdout_coverage"] * wrong["holdout_ratio"] < 0.3 * right["holdout_coverage"] * right["holdout_ratio"]
    # the cells' similarity where the pose puts them against a few pixels off: a peak at the right pose only
    assert right["holdout_contrast"] > 0.8
    assert wrong["holdout_contrast"] < 0.3
    assert np.isfinite(right["holdout_contrast"])
