"""The refinement stage on exact synthetic correspondences: trial rounds, the radius schedule, repeats."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.localize.coarse import CoarseConfig, best_hypotheses, coarse_hypotheses
from crossfire_ns.localize.map_index import ViewCells
from crossfire_ns.localize.pnp import PnPConfig, PoseSolver
from crossfire_ns.localize.refine import RefineConfig, refine, refinement_round, stacked_cells
from tests.localize.stub_index import K, query_features, scene, stub_index


def _setup(half_second_view: bool = False):
    points, descriptors, views, truth = scene()
    index = stub_index(points, descriptors, views)
    if half_second_view:  # its coarse hypothesis has fewer inliers
        second = index.views[1]
        index.views[1] = ViewCells(second.descriptors[::2], second.points[::2], second.pixels[::2])
    query = query_features(points, descriptors, truth)
    coarse = coarse_hypotheses(index, query, K, [0, 1], CoarseConfig(early_exit_inliers=10**9), PoseSolver(), 0.9)
    return index, query, coarse, truth


def test_a_settled_refinement_is_not_repeated_and_an_unsettled_one_is_up_to_the_limit():
    index, query, coarse, truth = _setup()
    best = best_hypotheses(coarse.hypotheses, 1)
    config = RefineConfig(radius_px=(6.0, 3.0), repeats=2)
    settled = refine(index, query, K, best, config, PoseSolver(), 0.9)
    assert settled.success and [r.radius_px for r in settled.rounds] == [6.0, 3.0]  # exact matches: no second look
    moving = refine(index, query, K, best, replace(config, settle_deg=-1), PoseSolver(), 0.9)
    assert moving.success and [r.radius_px for r in moving.rounds] == [6.0, 6.0, 6.0, 3.0]  # never settles: 1 + 2
    t_err, r_err = c2w_pose_errors(moving.final_round.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02


class _FirstCallFails(PoseSolver):
    """Its first solve finds nothing: the coarse favourite's trial round fails."""

    calls = 0

    def __call__(self, *args):
        self.calls += 1
        result = super().__call__(*args)
        return replace(result, success=False, num_inliers=0) if self.calls == 1 else result


def test_the_hypothesis_whose_trial_keeps_most_inliers_is_refined_not_the_coarse_favourite():
    index, query, coarse, _ = _setup(half_second_view=True)
    candidates = best_hypotheses(coarse.hypotheses, 2)
    assert candidates[0].pnp.num_inliers > candidates[1].pnp.num_inliers
    config = RefineConfig(radius_px=(6.0, 3.0))
    chosen = refine(index, query, K, candidates, config, _FirstCallFails(PnPConfig()), 0.9)
    assert chosen.success and chosen.num_trials == 2 and chosen.hypothesis is candidates[1]  # the runner-up
    assert chosen.trial_scores[0] == 0 and chosen.trial_scores[1] > 0
    assert [r.radius_px for r in chosen.rounds] == [6.0, 3.0]  # the winner's trial is its first round, not run twice
    assert chosen.inlier_counts() == chosen.trial_scores + [chosen.rounds[1].pnp.num_inliers]
    alone = refine(index, query, K, candidates[:1], config, _FirstCallFails(PnPConfig()), 0.9)
    assert alone.num_trials == 1 and not alone.success  # no trial: the favourite's first round decides


def test_a_round_on_views_that_see_nothing_fails_with_a_reason():
    index, query, coarse, _ = _setup()
    c2w = np.eye(4)
    c2w[:3, 3] = [0, -10, 0]  # looking away from every cell
    result = refinement_round(index, query, K, c2w, 3.0, RefineConfig(view_choice="nearest"), PoseSolver(), 0.9)
    assert not result.pnp.success and result.num_projected == 0 and "no index cell" in result.pnp.message


def test_stacked_cells_take_the_patch_placed_points_only_when_asked_and_where_the_index_has_them():
    descriptors = torch.eye(2)
    placed = ViewCells(descriptors, torch.zeros(2, 3), torch.zeros(2, 2), patch_points=torch.ones(2, 3))
    unplaced = ViewCells(descriptors, torch.full((2, 3), 2.0), torch.zeros(2, 2))
    points, stacked = stacked_cells([placed, unplaced], [0, 1])
    assert points[:2].max() == 0.0 and points[2:].min() == 2.0 and stacked.shape == (4, 2)
    points, _ = stacked_cells([placed, unplaced], [0, 1], placed=True)
    assert points[:2].min() == 1.0 and points[2:].min() == 2.0  # a view without placed points keeps its own
