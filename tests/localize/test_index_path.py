"""The crossfire matcher's recipe on exact synthetic correspondences: no map, no CNN, no render."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from crossfire_ns.geometry import c2w_pose_errors, opengl_c2w_to_opencv_w2c, rotation_angle_deg
from crossfire_ns.localize.map_index import ViewCells
from crossfire_ns.localize.matchers import CrossfireMatcherConfig
from crossfire_ns.localize.pnp import PnPResult
from crossfire_ns.synthetic.cameras import look_at
from tests.localize.stub_index import (
    IMAGE,
    D,
    K,
    StubMatcher,
    index_of,
    query_features,
    scene,
    stub_config,
    stub_index,
    stub_matcher,
)


def test_index_path_recovers_the_pose_without_rendering():
    points, descriptors, views, truth = scene()
    matcher = stub_matcher(query_features(points, descriptors, truth))
    estimate = matcher.estimate(IMAGE, K, [views[0], views[1]])
    assert estimate.success, estimate.message
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02  # pixel-centre quantisation of the painted features only
    assert matcher.renderer.num_renders == 0
    assert estimate.diagnostics["views_tried"] == 1  # the first view's hypothesis was clearly good: early exit
    assert estimate.seconds_coarse > 0 and estimate.seconds_refine > 0
    assert 0.5 < estimate.confidence <= 1.0


def test_index_path_without_early_exit_tries_every_prior():
    points, descriptors, views, truth = scene()
    matcher = stub_matcher(query_features(points, descriptors, truth), coarse={"early_exit_inliers": 10**9})
    estimate = matcher.estimate(IMAGE, K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["views_tried"] == 2


def test_a_query_that_matches_nothing_fails_instead_of_returning_a_pose():
    points, descriptors, views, truth = scene()
    shuffled = descriptors[torch.randperm(len(descriptors), generator=torch.Generator().manual_seed(1))]
    matcher = stub_matcher(query_features(points, shuffled, truth), min_similarity=0.6)
    estimate = matcher.estimate(IMAGE, K, [views[0], views[1]])
    assert not estimate.success and estimate.c2w is None


def test_poses_whose_camera_centre_is_loosely_held_are_reported_as_failed():
    points, descriptors, views, truth = scene()
    features = query_features(points, descriptors, truth)
    held = stub_matcher(features).estimate(IMAGE, K, [views[0]])
    assert held.success and 0 < held.diagnostics["centre_sigma"] < 0.1
    assert 0 < held.diagnostics["depth_centre_sigma"] < np.inf  # the same sigma against how far the inliers lie
    floor = held.diagnostics["centre_sigma"] / 2  # a floor this pose's inliers do not meet
    loose = stub_matcher(features, verify={"max_centre_sigma": floor}).estimate(IMAGE, K, [views[0]])
    assert not loose.success and "camera centre" in loose.message and loose.c2w is None


def test_low_confidence_poses_are_reported_as_failed():
    points, descriptors, views, truth = scene()
    matcher = stub_matcher(query_features(points, descriptors, truth), verify={"min_confidence": 1.01})
    estimate = matcher.estimate(IMAGE, K, [views[0]])
    assert not estimate.success and "confidence" in estimate.message and estimate.c2w is None
    strict = stub_matcher(query_features(points, descriptors, truth), verify={"min_coverage": 1.01})
    assert not strict.estimate(IMAGE, K, [views[0]]).success


def test_a_pose_whose_cells_agree_no_better_aligned_than_off_is_reported_as_failed():
    points, descriptors, views, truth = scene()
    right = stub_matcher(query_features(points, descriptors, truth)).estimate(IMAGE, K, views)
    assert right.success, right.message
    assert right.diagnostics["refine_contrast"] > 0.8  # exact features: a sharp peak where the pose puts the cells
    strict = stub_matcher(query_features(points, descriptors, truth), verify={"min_contrast": 1.01})
    estimate = strict.estimate(IMAGE, K, views)
    assert not estimate.success and "contrast" in estimate.message


def test_the_fine_round_runs_last_on_the_fine_cells_and_its_pose_is_reported():
    points, descriptors, views, truth = scene()
    features = query_features(points, descriptors, truth)
    matcher = stub_matcher(features, refine={"fine_round": True})
    coarse = matcher.stub_index.views
    # fine cells: the same points (a stub), so the fine round must find the same pose again
    matcher.stub_index.fine = [ViewCells(v.descriptors, v.points, v.pixels) for v in coarse]
    estimate = matcher.estimate(IMAGE, K, [views[0]])
    assert estimate.success and estimate.diagnostics["refine_rounds"] == 3
    assert estimate.diagnostics["fine_inliers"] > 0 and estimate.diagnostics["fine_rotation_deg"] < 0.3
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02
    matcher.stub_index.fine = [ViewCells(v.descriptors[:0], v.points[:0], v.pixels[:0]) for v in coarse]
    kept = matcher.estimate(IMAGE, K, [views[0]])  # a failed fine round keeps the pose
    assert kept.success and np.allclose(kept.c2w, estimate.c2w, atol=1e-2)
    assert "fine_rotation_deg" not in kept.diagnostics


def test_figures_no_floor_reads_are_recorded_only_when_asked_for():
    points, descriptors, _, truth = scene()
    views = [look_at([x, 0, z], [0, 4, 0]) for x, z in [(0.0, 0.0), (0.1, 0.05), (-0.4, 0.1), (0.5, -0.1)]]
    features = query_features(points, descriptors, truth)
    runs = {}
    for asked in (False, True):
        config = stub_config(refine={"views": 2}, verify={"diagnostic_figures": asked, "max_centre_sigma": np.inf})
        matcher = StubMatcher(config, stub_index(points, descriptors, views), features)
        runs[asked] = matcher.estimate(IMAGE, K, views[:1])
        assert matcher.index_on(torch.device("cpu")) is matcher.stub_index  # on the CPU the index is used as it is
    quiet, full = runs[False], runs[True]
    assert quiet.success and full.success and np.allclose(quiet.c2w, full.c2w)  # the figures cost, never steer
    assert "holdout_coverage" not in quiet.diagnostics and np.isnan(quiet.diagnostics["view_disagreement_deg"])
    assert full.diagnostics["holdout_coverage"] > 0.5 and np.isfinite(full.diagnostics["view_disagreement_deg"])


def _retry_case(**retrieval):
    """Two retrieved views whose cells match nothing in the query (unrelated descriptors), then the right one."""
    points, descriptors, views, truth = scene()
    unrelated = F.normalize(torch.randn(len(points), D, generator=torch.Generator().manual_seed(7)), dim=1)
    far = look_at([0.0, -0.2, 0.0], [0, 4, 0])
    index = index_of([(points, unrelated, views[0]), (points, unrelated, far), (points, descriptors, views[1])])
    # the unrelated views see the same points: the contrast check, which reads the refinement views' cells, is off
    config = stub_config(
        retrieval={"top_k": 2, **retrieval}, verify={"min_contrast": float("-inf"), "max_centre_sigma": np.inf}
    )
    matcher = StubMatcher(config, index, query_features(points, descriptors, truth))
    return matcher.estimate(IMAGE, K, [views[0], far, views[1]]), truth


def test_a_query_the_first_retrieved_views_do_not_confirm_goes_on_to_the_further_ones():
    estimate, truth = _retry_case(retry_top_k=3)
    assert estimate.success, estimate.message
    assert estimate.diagnostics["retried"] == 1 and estimate.diagnostics["views_tried"] == 3
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02
    without, _ = _retry_case(retry_top_k=0)  # the first two views alone: an honest failure
    assert not without.success and without.c2w is None


def test_a_confirmed_pose_does_not_pay_for_the_further_views():
    points, descriptors, views, truth = scene()
    matcher = stub_matcher(query_features(points, descriptors, truth), retrieval={"top_k": 1, "retry_top_k": 2})
    estimate = matcher.estimate(IMAGE, K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["views_tried"] == 1 and "retried" not in estimate.diagnostics


def test_report_unconfirmed_reports_a_doubted_pose_after_the_further_views_were_tried():
    points, descriptors, views, truth = scene()
    retrieval = {"top_k": 1, "retry_top_k": 2}
    doubted = stub_matcher(
        query_features(points, descriptors, truth), retrieval=retrieval, verify={"min_confidence": 1.01}
    )
    assert not doubted.estimate(IMAGE, K, [views[0], views[1]]).success
    reported = stub_matcher(
        query_features(points, descriptors, truth), retrieval=retrieval,
        verify={"min_confidence": 1.01, "report_unconfirmed": True, "max_centre_sigma": np.inf},
    )  # fmt: skip
    estimate = reported.estimate(IMAGE, K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["retried"] == 1 and estimate.diagnostics["views_tried"] == 2


def test_a_query_whose_refinement_views_see_nothing_fails_honestly_instead_of_crashing():
    """The crash seen on an inside-out room: no training view saw the query's cells at a coarse pose."""
    points, descriptors, views, truth = scene()
    matcher = stub_matcher(query_features(points, descriptors, truth))
    original = matcher.stub_index.covisible_views
    matcher.stub_index.covisible_views = lambda *args, **kwargs: []  # what covisible_views answers when none sees
    estimate = matcher.estimate(IMAGE, K, [views[0]])
    assert not estimate.success and estimate.c2w is None and "no index cell" in estimate.message
    matcher.stub_index.covisible_views = original
    assert matcher.estimate(IMAGE, K, [views[0]]).success


def _rendered_at(matcher, poses):
    """Make ``matcher``'s render rounds find ``poses`` in turn (a pose, or None: no pose); returns the poses each
    round started from."""
    starts, answers = [], list(poses)

    def render_round(query, shape, K_, c2w, *args):
        starts.append(c2w)
        pose = answers.pop(0)
        if pose is None:
            return PnPResult(False, message="too few inliers"), 3
        R, t = opengl_c2w_to_opencv_w2c(pose)
        return PnPResult(True, R, t, np.ones(50, bool), 50, 0.1), 60

    matcher.renders.render_round = render_round
    return starts


def _turned(c2w, degrees):
    out = c2w.copy()
    out[:3, :3] = out[:3, :3] @ Rotation.from_euler("y", degrees, degrees=True).as_matrix()
    return out


def test_a_pose_no_training_view_is_near_is_checked_with_a_render_at_it():
    """Nothing renders for a query between the training views. Past ``render.novel_view_deg`` a render at the index
    estimate checks it: a render that agrees keeps the (more precise) estimate; one that disagrees replaces it when a
    later render from its pose agrees with the pose it started from, and fails the query when none does within
    ``render.novel_view_max_renders``; a render that finds nothing fails it."""
    points, descriptors, views, truth = scene()
    features = query_features(points, descriptors, truth)
    near = stub_matcher(features).estimate(IMAGE, K, [views[0]])
    gap = near.diagnostics["training_view_gap_deg"]
    assert near.success and 0.5 < gap < CrossfireMatcherConfig().render.novel_view_deg

    novel = {"render": {"novel_view_deg": gap / 2}}
    matcher = stub_matcher(features, **novel)
    starts = _rendered_at(matcher, [_turned(near.c2w, 1.0)])  # agrees: the estimate stands
    kept = matcher.estimate(IMAGE, K, [views[0]])
    assert len(starts) == 1 and np.allclose(starts[0], near.c2w, atol=1e-6)
    assert kept.success and np.allclose(kept.c2w, near.c2w, atol=1e-6)
    assert kept.diagnostics["novel_view_render_deg"] == pytest.approx(1.0, abs=1e-3)
    assert kept.diagnostics["novel_view_renders"] == 1

    # the render's pose is 4 deg from the estimate: the index matches drifted (the stub's contrast floor, which
    # reads the stub's exact cells at the final pose, is off here)
    matcher = stub_matcher(features, verify={"min_contrast": float("-inf")}, **novel)
    drifted = _turned(near.c2w, 4.0)
    starts = _rendered_at(matcher, [drifted, _turned(drifted, 0.5)])
    moved = matcher.estimate(IMAGE, K, [views[0]])
    assert len(starts) == 2 and np.allclose(starts[1], drifted)
    assert moved.success and np.allclose(moved.c2w, _turned(drifted, 0.5), atol=1e-6)

    unsettled = [_turned(near.c2w, 5.0 * (i + 1)) for i in range(3)]
    for answers, message in ((unsettled, "renders at the estimate do not settle"), ([None], "a render at the")):
        matcher = stub_matcher(features, **novel)
        _rendered_at(matcher, answers * 2)  # (twice: a failed check goes on through the further views)
        failed = matcher.estimate(IMAGE, K, [views[0]])
        assert not failed.success and failed.message.startswith(message), failed.message


def test_rotation_gap_is_the_turn_to_the_nearest_training_view():
    index = stub_index(*scene()[:3])
    assert index.rotation_gap_deg(index.c2ws[1]) < 1e-4
    turned = index.c2ws[0].copy()
    turned[:3, :3] = turned[:3, :3] @ Rotation.from_euler("x", 20, degrees=True).as_matrix()
    nearest = min(rotation_angle_deg(c2w[:3, :3].T @ turned[:3, :3]) for c2w in index.c2ws)
    assert index.rotation_gap_deg(turned) == pytest.approx(nearest, abs=1e-4) and nearest > 15


class _LeaveOneOutMatcher(StubMatcher):
    """The stub on three views whose 'training images' carry their view number; each is matched as that view sees
    the scene, and every estimate records how many cells each view held."""

    def __init__(self, config):
        points, descriptors, views, truth = scene()
        self.poses = [views[0], views[1], truth]
        super().__init__(config, stub_index(points, descriptors, self.poses), None)
        self.points, self.descriptors, self.cells_seen = points, descriptors, []
        self.crossfire_map = self

    config_path = None  # the stand-in map was not loaded from a file: nothing is stored

    def training_image(self, view):
        return torch.full((IMAGE.shape[0], IMAGE.shape[1], 3), view / 255.0)

    def training_intrinsics(self, width, height, view=0):
        return K

    def encode(self, image):
        return query_features(self.points, self.descriptors, self.poses[int(image[0, 0, 0])])

    def estimate(self, image, K, priors, index=None):
        self.cells_seen.append([len(cells.points) for cells in self.index_on(torch.device("cpu"), index).views])
        return super().estimate(image, K, priors, index)


def test_leave_one_out_localizes_each_view_without_its_own_cells_once_per_index():
    matcher = _LeaveOneOutMatcher(stub_config())
    full = [len(cells.points) for cells in matcher.stub_index.views]
    records = matcher.leave_one_out(max_side=1024)
    assert len(records) == 3  # each view found from the other two
    for view, seen in enumerate(matcher.cells_seen):
        assert seen[view] == 0 and all(n == full[v] for v, n in enumerate(seen) if v != view)
    assert all(np.isfinite(d2) and 0 <= error < 1.0 for d2, error in records)
    assert matcher.stub_index.stats["leave_one_out"]["records"] == [list(r) for r in records]
    assert matcher.leave_one_out(max_side=1024) == records and len(matcher.cells_seen) == 3  # stored, not rerun
    assert [len(cells.points) for cells in matcher.index_on(torch.device("cpu")).views] == full  # the map's own again
    matcher.config.verify = replace(matcher.config.verify, min_contrast=0.2)  # other floors count other views
    assert len(matcher.leave_one_out(max_side=1024)) == 3 and len(matcher.cells_seen) == 6  # measured again
    broken = _LeaveOneOutMatcher(stub_config())
    broken.training_image = lambda view: 1 / 0 if view == 1 else _LeaveOneOutMatcher.training_image(broken, view)
    assert len(broken.leave_one_out(max_side=1024)) == 2  # a view that raises is skipped, the check goes on
    unmeasured = stub_config()
    unmeasured.covariance_views = 0
    assert _LeaveOneOutMatcher(unmeasured).leave_one_out(max_side=1024) == []
