"""The render -> match -> PnP loop's decisions, with a stub renderer and matchers (no map needed)."""

import numpy as np

from crossfire_ns.geometry import opengl_c2w_to_opencv_w2c
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.matchers import (
    Correspondences,
    CrossfireRenderMatcher,
    CrossfireRenderMatcherConfig,
    FeatureMatcher,
    PriorMatcherConfig,
)

K = np.array([[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])


def _truth():
    c2w = np.eye(4)
    c2w[:3, 3] = [0.1, -0.2, 3.0]
    return c2w


def _matches(outlier_share: float, n: int = 200, seed: int = 0) -> Correspondences:
    rng = np.random.default_rng(seed)
    points = rng.uniform([-1, -1, -1], [1, 1, 1], (n, 3))
    R, t = opengl_c2w_to_opencv_w2c(_truth())
    cam = points @ R.T + t
    pixels = cam[:, :2] / cam[:, 2:] * 100 + [40, 30]
    bad = rng.random(n) < outlier_share
    pixels[bad] = rng.uniform([0, 0], [80, 60], (bad.sum(), 2))
    return Correspondences(points, pixels, np.ones(n))


class _StubMatcher(FeatureMatcher):
    def __init__(self, config, model, renderer, matches=None):
        super().__init__(config, model, renderer)
        self.matches = matches

    def prepare_query(self, image):
        return {}

    def match(self, query, view):
        return self.matches


class _StubRenderer:
    num_renders = 0
    seconds = 0.0

    def render(self, c2w, K, width, height):
        self.num_renders += 1
        return None


def _localizer(matches, stub=_StubMatcher, **overrides) -> Localizer:
    """A Localizer whose matcher is ``stub`` (with the crossfire-render config and ``overrides``) and renders nothing."""
    loc = Localizer.__new__(Localizer)
    loc.model, loc.config, loc.renderer = None, CrossfireRenderMatcherConfig(**overrides), _StubRenderer()
    loc.matcher = (
        stub(loc.config, None, loc.renderer) if matches is None else stub(loc.config, None, loc.renderer, matches)
    )
    return loc


def test_good_matches_give_the_true_pose_and_count_renders():
    loc = _localizer(_matches(0.3), top_k=2, iterations=2, refine_iterations=1)
    estimate = loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4), np.eye(4)])
    assert estimate.success
    assert np.abs(estimate.c2w - _truth()).max() < 1e-3
    assert estimate.num_renders == 5  # 2 priors x 2 rounds + 1 refinement


def test_mostly_wrong_matches_are_reported_as_failed_not_as_a_pose():
    loc = _localizer(_matches(0.97, n=1000), top_k=1, iterations=1, min_inlier_ratio=0.1)
    estimate = loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)])
    assert not estimate.success
    assert "unreliable" in estimate.message or "inlier" in estimate.message


def test_prior_matcher_returns_the_first_prior():
    prior = _truth()
    loc = Localizer(None, PriorMatcherConfig())
    estimate = loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [prior])
    assert estimate.success and np.array_equal(estimate.c2w, prior) and estimate.num_renders == 0


class _StubCrossfire(CrossfireRenderMatcher):
    """Global and guided matching with chosen outlier shares. The default: global matching lost (mostly wrong
    matches), guided matching right, as for a close prior in a repetitive scene."""

    def __init__(self, config, model, renderer, global_outliers: float = 0.97, guided_outliers: float = 0.2):
        super().__init__(config, model, renderer)
        self.global_outliers, self.guided_outliers = global_outliers, guided_outliers
        self.guided_calls = []

    def prepare_query(self, image):
        return {}

    def match(self, query, view):
        return _matches(self.global_outliers, n=1000 if self.global_outliers > 0.5 else 200)

    def match_near(self, query, view, radius_px):
        self.guided_calls.append(radius_px)
        return _matches(self.guided_outliers, n=1000 if self.guided_outliers > 0.5 else 200, seed=1)


def test_failed_global_round_falls_back_to_guided_matching_on_the_same_render():
    loc = _localizer(None, _StubCrossfire, top_k=1, iterations=1, refine_iterations=1, fallback_guided_radius_px=16)
    estimate = loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)])
    assert estimate.success and np.abs(estimate.c2w - _truth()).max() < 1e-3
    assert estimate.num_renders == 2  # the fallback reuses the coarse render; 1 refinement
    assert loc.matcher.guided_calls == [16, loc.config.guided_radius_px]
    loc = _localizer(None, _StubCrossfire, top_k=1, iterations=1, fallback_guided_radius_px=0)
    assert not loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)]).success


def test_a_pose_that_refinement_cannot_confirm_is_reported_as_failed():
    loc = _localizer(None, _StubCrossfire, top_k=1, iterations=1, refine_iterations=2)
    loc.matcher = _StubCrossfire(loc.config, None, loc.renderer, global_outliers=0.2, guided_outliers=0.97)
    estimate = loc.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)])
    assert not estimate.success and estimate.c2w is None
    assert estimate.message.startswith("refinement failed")


def test_refinement_uses_its_own_tight_reprojection_threshold():
    """Matches all off by 3 px: most inliers at the coarse 4 px threshold, most not at the refinement's 2 px."""
    matches = _matches(0.0)
    rng = np.random.default_rng(5)
    angle = rng.uniform(0, 2 * np.pi, len(matches))
    noisy = Correspondences(
        matches.points3d, matches.points2d + 3.0 * np.c_[np.cos(angle), np.sin(angle)], matches.scores
    )
    loose = _localizer(noisy, top_k=1, iterations=1, refine_iterations=0)
    assert loose.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)]).success
    tight = _localizer(noisy, top_k=1, iterations=1, refine_iterations=1)
    estimate = tight.estimate(np.zeros((60, 80, 3), np.uint8), K, [np.eye(4)])
    coarse, refined = estimate.history
    assert coarse > 0.75 * len(noisy) and refined < 0.5 * coarse
    assert estimate.num_inliers == refined
