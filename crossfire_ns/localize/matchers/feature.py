"""The render -> match -> PnP loop shared by feature-based methods (crossfire, sift).

From each coarse prior: ``iterations`` rounds at ``render_width`` (render at the current estimate, match the query
against the render, lift the render's side to 3D with rendered depth, PnP + RANSAC); the hypothesis with most
inliers is refined by ``refine_iterations`` rounds at ``refine_render_width`` with a tighter threshold, and a pose
that refinement cannot confirm is reported as failed. A method says only how a query and a render are matched
(``prepare_query``, ``match`` and, if it can, guided ``match_near``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple, Type

import numpy as np

from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w, scale_intrinsics
from crossfire_ns.localize.matchers.base import Matcher, MatcherConfig, PoseEstimate
from crossfire_ns.localize.pnp import PnPResult, refuse_low_inlier_ratio, solve_pnp_ransac, with_covariance
from crossfire_ns.localize.render import RenderedView

MIN_ACCUMULATION = 0.5
"""Rendered pixels with less accumulated opacity see empty space: never matched."""


@dataclass
class Correspondences:
    """Matched pairs: 3D points (normalised world frame) and query pixels."""

    points3d: np.ndarray
    points2d: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.points3d)


def localized(result: PnPResult, num_matches: int) -> PoseEstimate:
    """A successful PnP result as a localized estimate (camera-to-world, OpenGL, normalised frame), with the PnP's
    pose covariance."""
    return PoseEstimate(
        True,
        opencv_w2c_to_opengl_c2w(result.R, result.t),
        result.num_inliers,
        num_matches,
        result.reprojection_error_px,
        "localized",
        covariance=result.covariance,
    )


@dataclass
class FeatureMatcherConfig(MatcherConfig):
    """The search shared by feature-based methods; rendering dominates its cost on CPU."""

    _target: Type = field(default_factory=lambda: FeatureMatcher)
    top_k: int = 3
    """Priors tried per query; the hypothesis with most inliers wins."""
    iterations: int = 2
    """Render-match-PnP rounds per prior at ``render_width``."""
    render_width: int = 80
    """Width of the coarse renders (height follows the query's aspect; capped at the query width)."""
    refine_iterations: int = 2
    """Rounds for the winning hypothesis at ``refine_render_width``; the last one decides success."""
    refine_render_width: int = 160
    """Width of the refinement renders (capped at the query width)."""
    reprojection_threshold_px: float = 4.0
    """RANSAC inlier threshold of the coarse rounds, in query pixels (loose: coarse renders are small)."""
    refine_reprojection_threshold_px: float = 2.0
    """RANSAC inlier threshold of the refinement rounds, in query pixels."""
    ransac_iterations: int = 2000
    """RANSAC iterations of PnP."""
    min_inliers: int = 12
    """Fewer inliers than this and the query is reported as failed."""
    min_inlier_ratio: float = 0.1
    """A pose supported by a smaller share of the matches is reported as failed: RANSAC finds consistent but wrong
    poses among mostly wrong matches, and a wrong pose is worse than an honest failure."""

    @property
    def num_priors(self) -> int:
        return self.top_k


class FeatureMatcher(Matcher):
    """The loop; subclasses implement ``prepare_query`` and ``match`` (and ``match_near`` for guided matching)."""

    config: FeatureMatcherConfig

    # ------------------------------------------------------------------ what a method provides

    def prepare_query(self, image: np.ndarray) -> Any:
        """Whatever ``match`` needs of the query (H, W, 3 uint8), computed once per query."""
        raise NotImplementedError

    def match(self, query: Any, view: RenderedView) -> Correspondences:
        """Global matching of the query against a render."""
        raise NotImplementedError

    def match_near(self, query: Any, view: RenderedView, radius_px: int) -> Optional[Correspondences]:
        """Guided matching within ``radius_px`` query pixels of where the render's pose puts each pixel; None when
        the method cannot guide (global matching is used instead)."""
        return None

    coarse_radius_px = 0
    """> 0: coarse rounds match guided within this radius (close priors)."""
    fallback_radius_px = 0
    """> 0: a coarse round whose global matching fails retries guided within this radius on the same render."""
    refine_radius_px = 0
    """> 0: refinement rounds match guided within this radius."""

    # ------------------------------------------------------------------ the loop

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        config = self.config
        start = time.perf_counter()
        query = self.prepare_query(image)
        best = PoseEstimate(success=False, message="no prior given")
        history: List[int] = []
        for prior in list(priors)[: config.top_k]:
            c2w = np.asarray(prior, dtype=np.float64)
            for _ in range(config.iterations):
                result, num_matches = self.render_round(
                    query, image.shape, K, c2w, config.render_width, self.coarse_radius_px
                )
                history.append(result.num_inliers)
                if not result.success:
                    if not best.success:  # keep the reason of the most promising failure
                        best = PoseEstimate(
                            False, num_matches=max(num_matches, best.num_matches), message=result.message
                        )
                    break
                c2w = opencv_w2c_to_opengl_c2w(result.R, result.t)
                if result.num_inliers > best.num_inliers:
                    best = localized(result, num_matches)
        coarse_seconds = time.perf_counter() - start
        if best.success:
            for _ in range(config.refine_iterations):
                result, num_matches = self.render_round(
                    query,
                    image.shape,
                    K,
                    best.c2w,
                    config.refine_render_width,
                    self.refine_radius_px,
                    config.refine_reprojection_threshold_px,
                )
                history.append(result.num_inliers)
                if not result.success:  # a coarse pose that refinement cannot confirm is not reported
                    best = PoseEstimate(False, num_matches=num_matches, message=f"refinement failed: {result.message}")
                    break
                best = localized(result, num_matches)
        best.history = history
        best.seconds_coarse = coarse_seconds
        best.seconds_refine = time.perf_counter() - start - coarse_seconds
        return best

    def render_round(
        self,
        query: Any,
        image_shape,
        K: np.ndarray,
        c2w: np.ndarray,
        width: int,
        radius_px: int = 0,
        threshold_px: Optional[float] = None,
    ) -> Tuple[PnPResult, int]:
        """One render -> match -> PnP round; returns (PnPResult, number of matches).

        With ``radius_px`` > 0 matching is guided (where the method can); otherwise global, and if that gives no
        reliable pose, guided within ``fallback_radius_px`` on the same render (no extra render: a close prior is
        often right where global matching is lost)."""
        height_q, width_q = image_shape[:2]
        width = min(width, width_q)
        height = max(1, round(height_q * width / width_q))
        view = self.renderer.render(c2w, scale_intrinsics(K, width / width_q, height / height_q), width, height)
        if radius_px > 0:
            guided = self.match_near(query, view, radius_px)
            if guided is not None:
                return self._solve(guided, K, threshold_px)
        result, num_matches = self._solve(self.match(query, view), K, threshold_px)
        if not result.success and self.fallback_radius_px > 0:
            guided = self.match_near(query, view, self.fallback_radius_px)
            if guided is not None:
                fallback, num_guided = self._solve(guided, K, threshold_px)
                if fallback.success:
                    return fallback, num_guided
        return result, num_matches

    def _solve(self, matches: Correspondences, K: np.ndarray, threshold_px: Optional[float] = None):
        config = self.config
        result = solve_pnp_ransac(
            matches.points3d,
            matches.points2d,
            K,
            reprojection_threshold_px=threshold_px or config.reprojection_threshold_px,
            iterations=config.ransac_iterations,
            min_inliers=config.min_inliers,
        )
        result = refuse_low_inlier_ratio(result, len(matches), config.min_inlier_ratio)
        return with_covariance(result, matches.points3d, matches.points2d, K), len(matches)
