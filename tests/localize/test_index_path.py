"""The index path of the crossfire matcher on exact synthetic correspondences: no map, no CNN, no render."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.localize.map_index import MapIndex, ViewCells, project
from crossfire_ns.localize.matchers import CrossfireMatcher, CrossfireMatcherConfig
from crossfire_ns.synthetic.cameras import look_at

W, H, D = 96, 72, 16
K = np.array([[80.0, 0, W / 2], [0, 80.0, H / 2], [0, 0, 1]])


class _Renders:
    num_renders = 0

    def render(self, *args, **kwargs):
        self.num_renders += 1
        raise AssertionError("the index path must not render")


def _scene(seed: int = 0):
    """Points on a box face, seen by two training views and a query between them; a descriptor per point."""
    rng = np.random.default_rng(seed)
    points = np.stack([rng.uniform(-1.5, 1.5, 400), np.full(400, 4.0), rng.uniform(-1.0, 1.0, 400)], 1)
    points[:, 1] += rng.uniform(-0.5, 0.5, 400)  # relief: PnP needs no planar degeneracy
    descriptors = F.normalize(torch.randn(400, D, generator=torch.Generator().manual_seed(seed)), dim=1)
    views = [look_at([-0.3, 0, 0], [0, 4, 0]), look_at([0.3, 0, 0.1], [0, 4, 0])]
    query = look_at([0.05, 0.1, 0.05], [0.1, 4, 0], roll_deg=2.0)
    return points, descriptors, views, query


def _index(points, descriptors, views) -> MapIndex:
    cells = []
    for c2w in views:
        pixels, _, front = project(points, c2w, K)
        seen = front & (pixels[:, 0] > 0) & (pixels[:, 0] < W) & (pixels[:, 1] > 0) & (pixels[:, 1] < H)
        cells.append(
            ViewCells(descriptors[seen], torch.from_numpy(points[seen]).float(), torch.from_numpy(pixels[seen]).float())
        )
    n = len(views)
    return MapIndex(np.stack(views), np.repeat(K[None], n, 0), np.tile([W, H], (n, 1)), np.ones(n, int), cells)


def _query_features(points, descriptors, c2w) -> dict:
    """The query's dense feature map: each point's descriptor painted at the pixel it projects to."""
    pixels, _, front = project(points, c2w, K)
    feature_map = torch.zeros(D, H, W)
    x, y = np.floor(pixels[:, 0]).astype(int), np.floor(pixels[:, 1]).astype(int)
    ok = front & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    feature_map[:, y[ok], x[ok]] = descriptors[torch.from_numpy(np.flatnonzero(ok))].T
    return {"feature_map": feature_map}


class _Matcher(CrossfireMatcher):
    def __init__(self, config, index, query):
        super().__init__(config, model=None, renderer=_Renders())
        self.fake_index, self.query = index, query
        self.crossfire_map = object()  # the index path runs when a map is attached

    def index(self):
        return self.fake_index

    def prepare_query(self, image):
        return dict(self.query)


# the stub map's two cameras are 0.6 apart: its camera extent is no scale for the centre-uncertainty floor
STUB = {"min_similarity": 0.9, "max_centre_sigma": float("inf"), "index_patch_rounds": 0}  # no training images


def _matcher(query_features, **options):
    points, descriptors, views, _ = _scene()
    config = CrossfireMatcherConfig(**{**STUB, **options})
    return _Matcher(config, _index(points, descriptors, views), query_features)


def test_index_path_recovers_the_pose_without_rendering():
    points, descriptors, views, truth = _scene()
    matcher = _matcher(_query_features(points, descriptors, truth))
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert estimate.success, estimate.message
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02  # pixel-centre quantisation of the painted features only
    assert matcher.renderer.num_renders == 0
    assert estimate.diagnostics["views_tried"] == 1  # the first view's hypothesis was clearly good: early exit
    assert estimate.seconds_coarse > 0 and estimate.seconds_refine > 0
    assert 0.5 < estimate.confidence <= 1.0


def test_index_path_without_early_exit_tries_every_prior():
    points, descriptors, views, truth = _scene()
    matcher = _matcher(_query_features(points, descriptors, truth), early_exit_inliers=10**9)
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["views_tried"] == 2


def test_a_query_that_matches_nothing_fails_instead_of_returning_a_pose():
    points, descriptors, views, truth = _scene()
    shuffled = descriptors[torch.randperm(len(descriptors), generator=torch.Generator().manual_seed(1))]
    matcher = _matcher(_query_features(points, shuffled, truth), min_similarity=0.6)
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert not estimate.success and estimate.c2w is None


def test_poses_whose_camera_centre_is_loosely_held_are_reported_as_failed():
    points, descriptors, views, truth = _scene()
    features = _query_features(points, descriptors, truth)
    held = _matcher(features).estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert held.success and 0 < held.diagnostics["centre_sigma"] < 0.1
    floor = held.diagnostics["centre_sigma"] / 2  # a floor this pose's inliers do not meet
    loose = _matcher(features, max_centre_sigma=floor).estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert not loose.success and "camera centre" in loose.message and loose.c2w is None


def test_low_confidence_poses_are_reported_as_failed():
    points, descriptors, views, truth = _scene()
    matcher = _matcher(_query_features(points, descriptors, truth), min_confidence=1.01)
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert not estimate.success and "confidence" in estimate.message and estimate.c2w is None
    strict = _matcher(_query_features(points, descriptors, truth), min_coverage=1.01)
    assert not strict.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]]).success


class _RecordingMatcher(_Matcher):
    """Records the search radius of every index refinement round."""

    radii: list

    def _refine_on_index(self, index, query, K, c2w, radius, image_shape, fine=False, **options):
        self.radii.append(("fine", radius) if fine else radius)
        return super()._refine_on_index(index, query, K, c2w, radius, image_shape, fine=fine, **options)


def _recording(query_features, **options) -> _RecordingMatcher:
    points, descriptors, views, _ = _scene()
    config = CrossfireMatcherConfig(**{**STUB, **options})
    matcher = _RecordingMatcher(config, _index(points, descriptors, views), query_features)
    matcher.radii = []
    return matcher


def test_a_settled_refinement_is_not_repeated_and_an_unsettled_one_is_up_to_the_limit():
    points, descriptors, views, truth = _scene()
    features = _query_features(points, descriptors, truth)
    settled = _recording(features, index_refine_radius_px=(6.0, 3.0), index_refine_repeats=2)
    estimate = settled.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert estimate.success and settled.radii == [6.0, 3.0]  # exact matches: the coarse pose needs no second look
    assert estimate.diagnostics["refine_rounds"] == 2
    moving = _recording(features, index_refine_radius_px=(6.0, 3.0), index_refine_repeats=2, index_refine_settle_deg=-1)
    estimate = moving.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert estimate.success and moving.radii == [6.0, 6.0, 6.0, 3.0]  # never settles: the first radius 1 + 2 times
    assert estimate.diagnostics["refine_rounds"] == 4
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02


class _FirstTrialFails(_RecordingMatcher):
    """Its first refinement round finds nothing: the coarse stage's favourite hypothesis refines worst."""

    def _refine_on_index(self, index, query, K, c2w, radius, image_shape, fine=False, **options):
        result = super()._refine_on_index(index, query, K, c2w, radius, image_shape, fine=fine, **options)
        if len(self.radii) == 1:
            return (replace(result[0], success=False, num_inliers=0),) + tuple(result[1:])
        return result


def test_the_hypothesis_whose_first_round_keeps_most_inliers_is_refined_not_the_coarse_favourite():
    points, descriptors, views, truth = _scene()
    features = _query_features(points, descriptors, truth)
    options = {**STUB, "early_exit_inliers": 10**9, "index_hypotheses": 2, "index_refine_radius_px": (6.0, 3.0)}
    index = _index(points, descriptors, views)
    second = index.views[1]  # the second view keeps half its cells: its coarse hypothesis has fewer inliers
    index.views[1] = ViewCells(second.descriptors[::2], second.points[::2], second.pixels[::2])
    matcher = _FirstTrialFails(CrossfireMatcherConfig(**options), index, features)
    matcher.radii = []
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    coarse = estimate.history[:2]  # the two views' coarse inliers
    assert estimate.success and coarse[0] != coarse[1] and estimate.diagnostics["hypotheses_refined"] == 2
    assert estimate.diagnostics["coarse_inliers"] == min(coarse)  # the runner-up, refined on
    assert matcher.radii == [6.0, 6.0, 3.0]  # a trial round each (the winner's is its first round), then the rest
    one = _FirstTrialFails(CrossfireMatcherConfig(**{**options, "index_hypotheses": 1}), index, features)
    one.radii = []
    single = one.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert single.diagnostics["coarse_inliers"] == max(single.history[:2]) and one.radii == [6.0]
    assert not single.success  # no trial: the favourite's first round (made to find nothing) decides


def test_the_fine_round_runs_last_on_the_fine_cells_and_its_pose_is_reported():
    points, descriptors, views, truth = _scene()
    features = _query_features(points, descriptors, truth)
    matcher = _recording(features, index_fine_round=True)
    coarse = matcher.fake_index.views
    # fine cells: the same points (a stub), so the fine round must find the same pose again
    matcher.fake_index.fine = [ViewCells(v.descriptors, v.points, v.pixels) for v in coarse]
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])
    assert estimate.success and matcher.radii == [12.0, 6.0, 3.0, ("fine", 3.0)]
    assert estimate.diagnostics["fine_inliers"] > 0 and estimate.diagnostics["fine_rotation_deg"] < 0.3
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02
    matcher.fake_index.fine = [ViewCells(v.descriptors[:0], v.points[:0], v.pixels[:0]) for v in coarse]
    kept = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0]])  # a failed fine round keeps the pose
    assert (
        kept.success and np.allclose(kept.c2w, estimate.c2w, atol=1e-2) and "fine_rotation_deg" not in kept.diagnostics
    )


def test_views_held_out_of_the_fit_agree_with_the_right_pose_and_not_with_a_shifted_one():
    points, descriptors, _, truth = _scene()
    views = [look_at([x, 0, z], [0, 4, 0]) for x, z in [(0.0, 0.0), (0.1, 0.05), (-0.4, 0.1), (0.5, -0.1)]]
    features = _query_features(points, descriptors, truth)
    config = CrossfireMatcherConfig(**{**STUB, "index_refine_views": 2})
    matcher = _Matcher(config, _index(points, descriptors, views), features)
    right = matcher._held_out_views(matcher.fake_index, features, K, truth, 3.0, (H, W))
    assert right["holdout_coverage"] > 0.8 and right["holdout_ratio"] > 0.9
    shifted = truth.copy()
    shifted[:3, 3] += [0.15, 0.0, 0.1]  # about 4 px at the points: beyond a 3 px search
    wrong = matcher._held_out_views(matcher.fake_index, features, K, shifted, 3.0, (H, W))
    assert wrong["holdout_coverage"] * wrong["holdout_ratio"] < 0.3 * right["holdout_coverage"] * right["holdout_ratio"]
    # the cells' similarity where the pose puts them against a few pixels off: a peak at the right pose only
    assert right["holdout_contrast"] > 0.8
    assert wrong["holdout_contrast"] < 0.3


def test_a_pose_whose_cells_agree_no_better_aligned_than_off_is_reported_as_failed():
    points, descriptors, views, truth = _scene()
    image = np.zeros((H, W, 3), np.uint8)
    right = _matcher(_query_features(points, descriptors, truth)).estimate(image, K, views)
    assert right.success, right.message
    assert right.diagnostics["refine_contrast"] > 0.8  # exact features: a sharp peak where the pose puts the cells
    strict = _matcher(_query_features(points, descriptors, truth), min_contrast=1.01).estimate(image, K, views)
    assert not strict.success and "contrast" in strict.message


def test_unconfirmed_names_every_floor_a_pose_misses_and_nan_figures_reject_nothing():
    from crossfire_ns.localize.matchers.crossfire import unconfirmed

    config = CrossfireMatcherConfig()
    sure = {"refine_coverage": 0.5, "centre_sigma": 0.001, "refine_contrast": 0.6}
    assert unconfirmed(sure, 0.85, config) is None
    assert unconfirmed({"refine_coverage": 0.5}, 0.85, config) is None  # sigma and contrast could not be computed
    doubt = unconfirmed({"refine_coverage": 0.1, "centre_sigma": 0.05, "refine_contrast": 0.1}, 0.5, config)
    for name in ("confidence", "coverage", "camera centre", "contrast"):
        assert name in doubt
    assert unconfirmed({**sure, "refine_contrast": 0.1}, 0.85, config.without_floors()) is None


def test_shift_contrast_is_high_for_aligned_features_and_low_for_unrelated_ones():
    from crossfire_ns.localize.matchers.crossfire import _shift_contrast

    rng = torch.Generator().manual_seed(0)
    smooth = F.normalize(F.avg_pool2d(torch.randn(1, D, 40, 60, generator=rng), 3, 1, 1)[0], dim=0)
    valid = torch.ones(40, 60, dtype=torch.bool)
    aligned = _shift_contrast(smooth, smooth, valid, 1.0, 3)
    other = F.normalize(F.avg_pool2d(torch.randn(1, D, 40, 60, generator=rng), 3, 1, 1)[0], dim=0)
    unrelated_median = float((smooth * other).sum(0).median())
    unrelated = _shift_contrast(smooth, other, valid, unrelated_median, 3)
    assert aligned > 0.9
    assert abs(unrelated) < 0.1


def test_figures_no_floor_reads_are_recorded_only_when_asked_for():
    points, descriptors, _, truth = _scene()
    views = [look_at([x, 0, z], [0, 4, 0]) for x, z in [(0.0, 0.0), (0.1, 0.05), (-0.4, 0.1), (0.5, -0.1)]]
    features = _query_features(points, descriptors, truth)
    runs = {}
    for asked in (False, True):
        config = CrossfireMatcherConfig(**{**STUB, "index_refine_views": 2, "diagnostic_figures": asked})
        matcher = _Matcher(config, _index(points, descriptors, views), features)
        runs[asked] = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, views[:1])
        assert matcher.index_on(torch.device("cpu")) is matcher.fake_index  # on the CPU the index is used as it is
    quiet, full = runs[False], runs[True]
    assert quiet.success and full.success and np.allclose(quiet.c2w, full.c2w)  # the figures cost, never steer
    assert "holdout_coverage" not in quiet.diagnostics and np.isnan(quiet.diagnostics["view_disagreement_deg"])
    assert full.diagnostics["holdout_coverage"] > 0.5 and np.isfinite(full.diagnostics["view_disagreement_deg"])


def _index_of(parts) -> MapIndex:
    """One index from (points, descriptors, view) parts: each view's cells carry their own descriptors."""
    single = [_index(p, d, [v]) for p, d, v in parts]
    n = len(parts)
    views = np.stack([v for _, _, v in parts])
    return MapIndex(
        views, np.repeat(K[None], n, 0), np.tile([W, H], (n, 1)), np.ones(n, int), [s.views[0] for s in single]
    )


def _retry_case(**options):
    """Two retrieved views whose cells match nothing in the query (unrelated descriptors), then the right one."""
    points, descriptors, views, truth = _scene()
    unrelated = F.normalize(torch.randn(len(points), D, generator=torch.Generator().manual_seed(7)), dim=1)
    far = look_at([0.0, -0.2, 0.0], [0, 4, 0])
    index = _index_of([(points, unrelated, views[0]), (points, unrelated, far), (points, descriptors, views[1])])
    # the unrelated views see the same points: the contrast check, which reads the refinement views' cells, is off
    config = CrossfireMatcherConfig(**{**STUB, "index_top_k": 2, "min_contrast": float("-inf"), **options})
    matcher = _Matcher(config, index, _query_features(points, descriptors, truth))
    return matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], far, views[1]]), truth


def test_a_query_the_first_retrieved_views_do_not_confirm_goes_on_to_the_further_ones():
    estimate, truth = _retry_case(index_retry_top_k=3)
    assert estimate.success, estimate.message
    assert estimate.diagnostics["retried"] == 1 and estimate.diagnostics["views_tried"] == 3
    t_err, r_err = c2w_pose_errors(estimate.c2w, truth)
    assert r_err < 0.3 and t_err < 0.02
    without, _ = _retry_case(index_retry_top_k=0)  # the first two views alone: an honest failure
    assert not without.success and without.c2w is None


def test_a_confirmed_pose_does_not_pay_for_the_further_views():
    points, descriptors, views, truth = _scene()
    matcher = _matcher(_query_features(points, descriptors, truth), index_top_k=1, index_retry_top_k=2)
    estimate = matcher.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["views_tried"] == 1 and "retried" not in estimate.diagnostics


def test_report_unconfirmed_reports_a_doubted_pose_after_the_further_views_were_tried():
    points, descriptors, views, truth = _scene()
    options = {"index_top_k": 1, "index_retry_top_k": 2, "min_confidence": 1.01}
    doubted = _matcher(_query_features(points, descriptors, truth), **options)
    assert not doubted.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]]).success
    reported = _matcher(_query_features(points, descriptors, truth), report_unconfirmed=True, **options)
    estimate = reported.estimate(np.zeros((H, W, 3), np.uint8), K, [views[0], views[1]])
    assert estimate.success and estimate.diagnostics["retried"] == 1 and estimate.diagnostics["views_tried"] == 2
