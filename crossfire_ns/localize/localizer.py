"""The localization loop: from coarse priors, alternate render -> match -> PnP + RANSAC, keep the best.

Poses here live in nerfstudio's normalised frame (camera-to-world, OpenGL); converting to and from the
data's original frame is the caller's business (see ``geometry``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Literal, Optional

import numpy as np

from crossfire_ns.localize.geometry import opencv_w2c_to_opengl_c2w, scale_intrinsics
from crossfire_ns.localize.matchers import CrossfireMatcher, SiftMatcher
from crossfire_ns.localize.photometric import photometric_refine
from crossfire_ns.localize.pnp import solve_pnp_ransac
from crossfire_ns.localize.render import MapRenderer

Matcher = Literal["crossfire", "sift", "photometric", "prior"]
DescriptorSource = Literal["field", "rendered-rgb"]


@dataclass
class LocalizerConfig:
    """How hard to try per query; rendering dominates the cost on CPU."""

    matcher: Matcher = "crossfire"
    """crossfire (CNN features vs rendered descriptors), sift (vs rendered RGB), photometric (iNeRF-style),
    or prior (the top-1 prior unchanged: the baseline every matcher must beat)."""
    descriptor_source: DescriptorSource = "rendered-rgb"
    """crossfire matcher: what the query's CNN features are matched against at a hypothesis. field: the
    descriptors rendered from the descriptor field (CROSSFIRE); rendered-rgb: the CNN's own features of the
    colour rendered there (the default: on CPU-trained maps the radiance field is learnt far better than the
    descriptor field; BENCHMARKS.md has the figures)."""
    top_k: int = 3
    """Priors tried per query; the hypothesis with most inliers wins."""
    iterations: int = 2
    """Render-match-PnP rounds per prior at the coarse render width."""
    render_width: Optional[int] = None
    """Width of coarse renders (height follows the query's aspect); default 80 for crossfire, 160 for sift."""
    refine_iterations: int = 2
    """Extra rounds for the winning hypothesis at ``refine_render_width``; the last one decides success."""
    refine_render_width: int = 160
    """Width of the refinement renders (capped at the query width)."""
    coarse_guided_radius_px: int = 0
    """>0: the coarse rounds also use guided matching, within this many query pixels (for priors known to be
    close, e.g. --prior poses or sequential); 0: global mutual nearest neighbours (retrieval priors)."""
    fallback_guided_radius_px: int = 16
    """When a coarse round's global matching gives no reliable pose, match the same render again, guided
    within this many query pixels of the hypothesis; 0: no fallback. It rescues close priors (fox, fern, lego
    in BENCHMARKS.md) but turns far-off priors into confident wrong poses (the bundled scene): guided matches
    agree with whatever pose they were searched around, so their inlier ratio cannot tell right from wrong."""
    guided_radius_px: int = 6
    """Refinement rounds of the crossfire matcher search each rendered pixel's match only within this many
    query pixels of where the current estimate puts it (sub-pixel peak); 0: global mutual nearest neighbours."""
    min_similarity: float = 0.6
    """Cosine-similarity threshold on mutual-nearest-neighbour matches (crossfire matcher)."""
    reprojection_threshold_px: float = 4.0
    """RANSAC inlier threshold of the coarse rounds, in query pixels (loose: coarse renders are small)."""
    refine_reprojection_threshold_px: float = 2.0
    """RANSAC inlier threshold of the refinement rounds, in query pixels. Their guided matches are sub-pixel, so
    a tight threshold keeps only the precise ones (bundled scene, with 2 rounds instead of 1 at 4 px: median
    0.54 -> 0.21 deg; BENCHMARKS.md)."""
    ransac_iterations: int = 2000
    """RANSAC iterations of PnP."""
    min_inliers: int = 12
    """Fewer inliers than this and the query is reported as failed."""
    min_inlier_ratio: float = 0.1
    """A pose supported by a smaller share of the matches is reported as failed: RANSAC finds consistent
    but wrong poses among mostly wrong matches, and a wrong pose is worse than an honest failure."""
    photometric_steps: int = 150
    """Gradient steps of the photometric baseline (top-1 prior only)."""
    photometric_rays: int = 512
    """Rays per photometric step."""
    photometric_lr: float = 5e-3
    """Adam learning rate on the se(3) pose update of the photometric baseline."""


@dataclass
class PoseEstimate:
    """The outcome for one query, in the normalised frame."""

    success: bool
    c2w: Optional[np.ndarray] = None
    num_inliers: int = 0
    num_matches: int = 0
    reprojection_error_px: float = float("nan")
    message: str = ""
    num_renders: int = 0
    render_seconds: float = 0.0
    history: List[int] = field(default_factory=list)
    """Inlier counts of every round, for diagnosis."""


class Localizer:
    """Estimates query poses against one trained map."""

    def __init__(self, model, config: LocalizerConfig) -> None:
        self.model = model
        self.config = config
        self.renderer = MapRenderer(model)
        if config.matcher == "sift":
            self.matcher = SiftMatcher()
        else:
            self.matcher = CrossfireMatcher(
                model, min_similarity=config.min_similarity, source=config.descriptor_source
            )

    @property
    def render_width(self) -> int:
        if self.config.render_width is not None:
            return self.config.render_width
        return 160 if self.config.matcher == "sift" else 80

    def _round(
        self,
        query: dict,
        image_shape,
        K: np.ndarray,
        c2w: np.ndarray,
        width: int,
        radius_px: int = 0,
        threshold_px: Optional[float] = None,
    ):
        """One render -> match -> PnP round; returns (PnPResult, number of matches).

        With ``radius_px`` > 0 (crossfire matcher) matching is guided; otherwise global mutual nearest
        neighbours, and if that gives no reliable pose, guided matching within ``fallback_guided_radius_px``
        on the same render (no extra render: a close prior is often right where global matching is lost)."""
        height_q, width_q = image_shape[:2]
        width = min(width, width_q)
        height = max(1, round(height_q * width / width_q))
        view = self.renderer.render(c2w, scale_intrinsics(K, width / width_q, height / height_q), width, height)
        crossfire = isinstance(self.matcher, CrossfireMatcher)
        if radius_px > 0 and crossfire:
            return self._solve(self.matcher.match_guided(query, view, radius_px), K, threshold_px)
        result, num_matches = self._solve(self.matcher.match(query, view), K, threshold_px)
        if not result.success and crossfire and self.config.fallback_guided_radius_px > 0:
            guided, num_guided = self._solve(
                self.matcher.match_guided(query, view, self.config.fallback_guided_radius_px), K, threshold_px
            )
            if guided.success:
                return guided, num_guided
        return result, num_matches

    def _solve(self, matches, K: np.ndarray, threshold_px: Optional[float] = None):
        result = solve_pnp_ransac(
            matches.points3d,
            matches.points2d,
            K,
            reprojection_threshold_px=threshold_px or self.config.reprojection_threshold_px,
            iterations=self.config.ransac_iterations,
            min_inliers=self.config.min_inliers,
        )
        if result.success and result.num_inliers < self.config.min_inlier_ratio * len(matches):
            result.success = False
            result.message = (
                f"only {result.num_inliers} of {len(matches)} matches are PnP inliers "
                f"(< {self.config.min_inlier_ratio:.0%}): the pose is unreliable"
            )
        return result, len(matches)

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: List[np.ndarray]) -> PoseEstimate:
        """Pose of ``image`` (H, W, 3 uint8, undistorted) with intrinsics ``K`` from the given priors."""
        renders0, seconds0 = self.renderer.num_renders, self.renderer.seconds
        if self.config.matcher == "prior":
            estimate = PoseEstimate(success=bool(priors), c2w=priors[0] if priors else None, message="prior only")
        elif self.config.matcher == "photometric":
            estimate = self._photometric(image, K, priors)
        else:
            estimate = self._feature_based(image, K, priors)
        estimate.num_renders = self.renderer.num_renders - renders0
        estimate.render_seconds = self.renderer.seconds - seconds0
        return estimate

    def _feature_based(self, image: np.ndarray, K: np.ndarray, priors: List[np.ndarray]) -> PoseEstimate:
        query = self.matcher.prepare_query(image)
        best = PoseEstimate(success=False, message="no prior given")
        history: List[int] = []
        for prior in priors[: self.config.top_k]:
            c2w = np.asarray(prior, dtype=np.float64)
            for _ in range(self.config.iterations):
                result, num_matches = self._round(
                    query, image.shape, K, c2w, self.render_width, self.config.coarse_guided_radius_px
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
                    best = PoseEstimate(
                        True, c2w, result.num_inliers, num_matches, result.reprojection_error_px, "localized"
                    )
        if best.success:
            for _ in range(self.config.refine_iterations):
                result, num_matches = self._round(
                    query,
                    image.shape,
                    K,
                    best.c2w,
                    self.config.refine_render_width,
                    self.config.guided_radius_px,
                    self.config.refine_reprojection_threshold_px,
                )
                history.append(result.num_inliers)
                if not result.success:  # a coarse pose that refinement cannot confirm is not reported
                    best = PoseEstimate(False, num_matches=num_matches, message=f"refinement failed: {result.message}")
                    break
                c2w = opencv_w2c_to_opengl_c2w(result.R, result.t)
                best = PoseEstimate(
                    True, c2w, result.num_inliers, num_matches, result.reprojection_error_px, "localized"
                )
        best.history = history
        return best

    def _photometric(self, image: np.ndarray, K: np.ndarray, priors: List[np.ndarray]) -> PoseEstimate:
        if not priors:
            return PoseEstimate(success=False, message="no prior")
        start = time.perf_counter()
        result = photometric_refine(
            self.model,
            image,
            K,
            priors[0],
            steps=self.config.photometric_steps,
            rays_per_step=self.config.photometric_rays,
            lr=self.config.photometric_lr,
        )
        self.renderer.seconds += time.perf_counter() - start
        message = f"photometric loss {result.initial_loss:.4f} -> {result.final_loss:.4f}"
        return PoseEstimate(success=True, c2w=result.c2w, message=message)
