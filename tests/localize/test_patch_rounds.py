"""The patch rounds' outcome: which of its rounds held, and how tightly a round's inliers hold the camera centre."""

import math

import numpy as np

from crossfire_ns.geometry import project_points
from crossfire_ns.localize.patch_rounds import PatchRefinement, PatchRound
from crossfire_ns.localize.pnp import PnPConfig, PnPResult, PoseSolver


def test_the_first_round_held_unless_the_rounds_stopped_at_it():
    round_ = object()  # the rounds' contents do not matter here, only how many ran and whether one failed
    assert not PatchRefinement().first_round_held  # no round ran: nothing held
    assert not PatchRefinement(rounds=[round_], failed="round 1: 30 of 800 patches found").first_round_held
    assert PatchRefinement(rounds=[round_]).first_round_held
    assert PatchRefinement(rounds=[round_, round_], failed="round 2: 97 of 800 patches found").first_round_held


def test_a_rounds_centre_sigma_grows_with_the_pixel_noise_it_assumes_and_is_nan_without_a_pose():
    rng = np.random.default_rng(0)
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    R, t = np.eye(3), np.array([0.0, 0.0, 0.0])
    points3d = np.column_stack([rng.uniform(-1.5, 1.5, 200), rng.uniform(-1, 1, 200), rng.uniform(3, 5, 200)])
    pixels, _ = project_points(points3d, K, R, t)
    points2d = pixels + rng.normal(0, 0.05, pixels.shape)  # patches found to a twentieth of a pixel
    pnp = PoseSolver(PnPConfig())(points3d, points2d, K, 1.0, (96, 128))
    found = PatchRound(pnp, len(points3d), 250, points3d, points2d)
    residual_only, floored = found.centre_sigma(K, 0.0), found.centre_sigma(K, 0.35)
    assert 0.0 < residual_only < floored
    assert 5.0 < floored / residual_only < 10.0  # 0.35 px against about 0.05 px of noise
    failed = PatchRound(PnPResult(False, message="no training patch found in the query"), 0, 250)
    assert math.isnan(failed.centre_sigma(K, 0.35))
