"""crossfire: the query's dense CNN features against descriptors of the map at the hypothesis.

What the query is matched against (``descriptor_source``): the descriptor field rendered there (the CROSSFIRE
paper), or the CNN's own features of the colour rendered there (on CPU-trained maps the radiance field is learnt
far better than the descriptor field; BENCHMARKS.md). Global matching is mutual nearest neighbours above a
similarity threshold; guided matching searches each rendered pixel's match near where the hypothesis puts it, at
sub-pixel precision. Pixel coordinates follow nerfstudio's convention (pixel centres at +0.5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F

from crossfire_ns.geometry import opengl_c2w_to_opencv_w2c, rotation_angle_deg, scale_intrinsics
from crossfire_ns.localize.map_index import MapIndex, MapIndexConfig, ViewCells, map_index, project
from crossfire_ns.localize.matchers.base import PoseEstimate
from crossfire_ns.localize.matchers.feature import (
    MIN_ACCUMULATION,
    Correspondences,
    FeatureMatcher,
    FeatureMatcherConfig,
    localized,
)
from crossfire_ns.localize.matching import guided_matches, mutual_nearest_neighbours, two_level_guided_matches
from crossfire_ns.localize.patch_alignment import align_patches, smoothed_grey
from crossfire_ns.localize.patch_triangulation import cell_contrast, training_greys, view_camera
from crossfire_ns.localize.pnp import PnPResult, camera_centre_sigma, solve_pnp_poselib, solve_pnp_ransac
from crossfire_ns.localize.render import RenderedView

DescriptorSource = Literal["field", "rendered-rgb"]
CoarseStage = Literal["index", "render"]
Solver = Literal["poselib", "opencv"]

MIN_TEXTURE = 2.0 / 255.0
"""Query pixels whose 5x5 grey-level standard deviation is below this are not matched."""


@dataclass
class CrossfireMatcherConfig(FeatureMatcherConfig):
    """CNN features of the query against the map's descriptors rendered at each hypothesis."""

    _target: Type = field(default_factory=lambda: CrossfireMatcher)
    descriptor_source: DescriptorSource = "rendered-rgb"
    """What the query's CNN features are matched against: field (the descriptor field rendered at the hypothesis,
    as in CROSSFIRE) or rendered-rgb (the CNN's features of the colour rendered there; the better of the two on
    CPU-trained maps, see BENCHMARKS.md)."""
    min_similarity: float = 0.6
    """Cosine-similarity threshold on matches."""
    coarse_guided_radius_px: int = 0
    """>0: the coarse rounds also use guided matching, within this many query pixels (for priors known to be
    close, e.g. --prior poses or sequential); 0: global mutual nearest neighbours (retrieval priors)."""
    fallback_guided_radius_px: int = 16
    """When a coarse round's global matching gives no reliable pose, match the same render again, guided within
    this many query pixels of the hypothesis; 0: no fallback. It rescues close priors but can turn far-off priors
    into confident wrong poses: guided matches agree with whatever pose they were searched around."""
    guided_radius_px: int = 6
    """Refinement rounds search each rendered pixel's match only within this many query pixels of where the
    current estimate puts it (sub-pixel peak); 0: global mutual nearest neighbours."""
    coarse: CoarseStage = "index"
    """index: match the query against the map index's cells of the training views nearest each prior (no render:
    the index is built once per map and stored beside it), refine against the index's cells at the estimate; render:
    the render-match-PnP rounds at each prior (``iterations``, ``render_width``)."""
    index: MapIndexConfig = field(default_factory=MapIndexConfig)
    """How the map index is built (index coarse stage)."""
    index_top_k: int = 8
    """Index path: retrieved training views whose cells the coarse stage matches (each a matching and a PnP, no
    render; the early exit stops sooner); retrieval misranks views in inside-out scenes (BENCHMARKS.md, session 15).
    The render path tries ``top_k``."""
    index_retry_top_k: int = 16
    """Index path: when the pose from the first ``index_top_k`` retrieved views is not confirmed (a confidence floor
    doubts it, or none is found), the coarse stage goes on through the retrieved views up to this many, and the
    hypotheses of both passes are refined again when the new views add one among the ``index_hypotheses`` best: only
    queries the map does not confirm pay for it. Retrieval
    misranks the views of an inside-out room (BENCHMARKS.md, session 18); <= ``index_top_k``: no second pass."""
    views_per_prior: int = 1
    """Index views matched per prior (its nearest training views): retrieval priors are training views already; a
    lone prior (``--prior poses``, ``sequential``) gets its ``top_k`` nearest views."""
    index_hypotheses: int = 8
    """Index path: the coarse hypotheses with most inliers (this many at most) each get one refinement round at the
    first radius, and the one whose round keeps most inliers is refined on (a wrong hypothesis can win the coarse
    count on few, coarse cells; it rarely wins the refined one); 1: the coarse count decides."""
    ransac_min_iterations: int = 100
    """poselib's RANSAC stops once it is 99.99% sure of its best sample (few dozen samples when most matches are
    right), but not before this many samples (poselib's own default, 1000, spent most of each solve on samples that
    changed nothing; BENCHMARKS.md, session 17); ``ransac_iterations`` caps it."""
    ransac_max_points: int = 1000
    """poselib PnP sees at most this many matches, evenly spread (0: all); inliers are still counted over all. Its
    local optimisation and refinement cost grows with every match, and a refinement round has up to 4000: the
    largest per-query cost on a GPU machine (BENCHMARKS.md, session 17)."""
    early_exit_inliers: int = 80
    """Index coarse stage: stop trying further priors once a hypothesis has this many inliers..."""
    early_exit_ratio: float = 0.3
    """...and this share of its view's matches as inliers."""
    index_refine_views: int = 4
    """Index refinement: how many training views (``index_refine_view_choice``) have their cells matched, guided, in the
    query at each estimate."""
    index_refine_view_choice: Literal["overlap", "covisible", "nearest"] = "covisible"
    """Which training views the refinement (and the held-out check) takes at an estimate: overlap (those with the
    most index cells projected into the query there), nearest (closest camera centre and viewing direction) or
    covisible (the nearest among the views that see at least ``index_covisible_share`` as many of the query's cells
    as the one that sees most, counting only cells seen from within ``index_covisible_angle_deg`` of their view's
    line of sight). Covisible by default: in the inside-out held-out room the nearest views often look elsewhere (a
    coarse pose 0.8 deg off found 7 matches among 76 cells), and on the bundled scene and fern it changes next to
    nothing (BENCHMARKS.md, session 18)."""
    index_covisible_angle_deg: float = 30.0
    """``index_refine_view_choice`` covisible: the largest angle between the query's and a view's line of sight to a
    cell for the cell to count towards that view."""
    index_covisible_share: float = 0.5
    """``index_refine_view_choice`` covisible: the share of the best view's count a view needs to be chosen."""
    index_refine_radius_px: Tuple[float, ...] = (12.0, 6.0, 3.0)
    """Index refinement rounds: each searches a cell's match within this many query pixels of where the current
    estimate projects its 3D point (sub-pixel peak), then re-solves the pose (the first wide enough for a coarse pose
    a few degrees off)."""
    index_two_level_above_px: float = 6.0
    """Index refinement rounds searching wider than this (query pixels) search at half resolution first, then within
    3 pixels at full resolution (``matching.two_level_guided_matches``: a 12-pixel round at about a third of the
    cost); inf: every round at full resolution."""
    index_refine_repeats: int = 0
    """Index refinement: the first round is repeated, at most this many more times, while it still moves the estimate
    by more than ``index_refine_settle_deg`` (a coarse pose several degrees off is not within the finer rounds' reach
    after one search). 0 by default: 2 rescued one bundled query of 30 but let fern's blurred poses drift further
    (BENCHMARKS.md, session 9)."""
    index_fine_round: bool = False
    """Index path: after the refinement rounds, one more at the last radius on 1-pixel cells (every training pixel of
    the trusted cells, ``MapIndexConfig.fine_cells``, stored in the index); its pose is reported when it succeeds,
    while the confidence floors judge the rounds before it (calibrated on 2-pixel cells)."""
    index_patch_rounds: int = 2
    """Index path: after the refinement rounds, this many rounds that align each trusted cell's patch of its training
    image in the query by normalised cross-correlation (``patch_alignment``: warped through the plane at the cell,
    sub-pixel, invariant to gain and offset) and re-solve the pose; their pose is reported when they succeed, while
    the confidence floors judge the rounds before them. The CNN's matches carry a per-query shift that PnP turns into
    rotation; grey-level patches do not (BENCHMARKS.md, session 16)."""
    patch_radius_px: int = 4
    """Patch rounds: half-size of the square patch compared (query pixels; 4: 9 x 9)."""
    patch_search_px: Tuple[int, ...] = (2, 1)
    """Patch rounds: how far (query pixels) each round searches around where the current estimate puts a cell; the
    last entry repeats for further rounds."""
    patch_min_ncc: float = 0.8
    """Patch rounds: a cell's peak normalised cross-correlation must reach this to count as a match."""
    patch_min_contrast: float = 0.02
    """Patch rounds: training patches whose grey-level standard deviation (0-1 scale) is below this carry no position
    and are not searched."""
    patch_max_cells: int = 800
    """Patch rounds: at most this many cells are searched per round, spread evenly over the refinement views and over
    each view's cells: the cost grows with the cells, the precision hardly beyond a few hundred."""
    patch_reprojection_threshold_px: float = 1.0
    """Patch rounds: PnP inlier threshold, in query pixels (NCC peaks are sub-pixel)."""
    patch_min_share: float = 0.15
    """Patch rounds: a round in which fewer than this share of the searched cells find their patch (blur, low light:
    the grey levels no longer look alike, and the few peaks found move right poses) keeps the estimate it started
    from. Chosen on the bundled scene and fern (BENCHMARKS.md, session 16)."""
    patch_smoothing_px: float = 1.0
    """Patch rounds: standard deviation (pixels) of a Gaussian blur of both the query and the training images before
    they are compared: it takes the sensor noise out of the correlation and moves no peak (the same blur on both)."""
    index_refine_settle_deg: float = 0.5
    """Rotation (degrees) below which a refinement round counts as settled (``index_refine_repeats``)."""
    render_refinements: int = 0
    """Index path: render-match-PnP rounds at the query's resolution after the index refinement (each costs one
    render; ``guided_radius_px``, ``refine_reprojection_threshold_px``); 0: none."""
    min_confidence: float = 0.6
    """Index path: a pose whose confidence (the share of the last refinement's guided matches that it explains within
    ``refine_reprojection_threshold_px``) is below this is reported as failed: a wrong pose reported as localized is
    worse than an honest failure. Calibrated on the bundled scene and fern (BENCHMARKS.md)."""
    min_coverage: float = 0.16
    """Index path: a pose at which fewer than this share of the index cells projected into the query find a distinct
    match is reported as failed (at a wrong pose the map's cells land on the wrong texture). Calibrated with
    ``min_confidence``."""
    max_centre_sigma: float = 0.01
    """Index path: a pose whose camera centre the last refinement's inliers hold more loosely than this share of the
    map's camera extent (first-order covariance, ``pnp.camera_centre_sigma``) is reported as failed: few matches over
    a narrow view let the centre slide along the axis while inlier shares stay high. Calibrated with
    ``min_confidence`` (BENCHMARKS.md, session 9); inf switches it off."""
    min_contrast: float = 0.25
    """Index path: a pose is reported as failed when the fitted views' cells agree with the query where it projects
    them no better than this share of what was left to gain over a few pixels off (``refine_contrast``,
    ``_index_contrast``: (aligned - shifted) / (1 - shifted), no render): at a wrong pose they land on the wrong
    texture, aligned or not. Chosen on the bundled scene and fern (BENCHMARKS.md, session 13); -inf switches it off."""
    report_unconfirmed: bool = False
    """Index path: report a pose the confidence floors doubt as localized anyway (calibration studies,
    ``benchmarks.confidence collect``); the floors still decide whether ``index_retry_top_k`` views are tried."""
    diagnostic_figures: bool = False
    """Index path: also record the figures no floor reads, for calibration studies (``benchmarks.confidence``):
    ``view_disagreement_deg`` (a PnP per refinement view) and the ``holdout_*`` figures (a guided matching of the
    next views); off, a query costs about four PnP solves and one matching less."""
    render_check: bool = False
    """Index path: render the map at the final estimate (``render_check_width`` wide, colour) and record how much of
    the query agrees with it (``render_agreement``: the share of textured, covered pixels whose CNN features match
    the render's at the same pixel above ``min_similarity``). Costs one render; a diagnostic (BENCHMARKS.md)."""
    render_check_width: int = 80
    """Width of the render of ``render_check``."""
    solver: Solver = "poselib"
    """PnP of the index path: poselib (LO-RANSAC with robust refinement) or opencv (RANSAC P3P, then LM)."""

    def without_floors(self) -> "CrossfireMatcherConfig":
        """These settings with every confidence floor switched off: every pose found is reported, and no query
        goes on to ``index_retry_top_k`` views (``report_unconfirmed`` keeps that second pass)."""
        return replace(
            self, min_confidence=0.0, min_coverage=0.0, max_centre_sigma=float("inf"), min_contrast=float("-inf")
        )

    @property
    def num_priors(self) -> int:
        return max(self.index_top_k, self.index_retry_top_k) if self.coarse == "index" else self.top_k

    @property
    def renders_descriptors(self) -> bool:
        return self.descriptor_source == "field"


def _projected_inside(points: np.ndarray, c2w: np.ndarray, K, image_shape, margin: float):
    """(N, 3) world points -> their (N, 2) pixels at ``c2w`` and the indices of those in front of the camera and at
    least ``margin`` pixels inside the image (a guided search of that radius stays in the feature map)."""
    height, width = image_shape[:2]
    pixels, _, in_front = project(points, c2w, K)
    inside = in_front & (pixels[:, 0] >= margin) & (pixels[:, 0] < width - margin)
    inside &= (pixels[:, 1] >= margin) & (pixels[:, 1] < height - margin)
    return pixels, np.flatnonzero(inside)


def unconfirmed(diagnostics: dict, confidence: float, config: "CrossfireMatcherConfig") -> Optional[str]:
    """Why the index path's floors reject a pose with these ``diagnostics``, or None when they confirm it (pure: the
    calibration benchmark applies it to recorded figures). A NaN centre uncertainty or contrast (its check could not
    run) rejects nothing; a missing coverage counts as none."""
    coverage = diagnostics.get("refine_coverage", 0.0)
    sigma = diagnostics.get("centre_sigma", float("nan"))
    contrast = diagnostics.get("refine_contrast", float("nan"))
    doubts = []
    if confidence < config.min_confidence:
        doubts.append(f"confidence {confidence:.2f}, min {config.min_confidence:.2f}")
    if coverage < config.min_coverage:
        doubts.append(f"coverage {coverage:.2f}, min {config.min_coverage:.2f}")
    if sigma > config.max_centre_sigma:
        doubts.append(f"camera centre within {sigma:.3f} of the map's extent, max {config.max_centre_sigma:.3f}")
    if contrast < config.min_contrast:
        doubts.append(f"contrast {contrast:.2f}, min {config.min_contrast:.2f}")
    return "; ".join(doubts) or None


def _stacked_cells(cells: Sequence[ViewCells], views: Sequence[int]) -> Tuple[np.ndarray, torch.Tensor]:
    """The cells of ``views`` as one set: ((N, 3) float64 points, (N, D) descriptors)."""
    points = torch.cat([cells[v].points for v in views]).numpy().astype(np.float64)
    return points, torch.cat([cells[v].descriptors for v in views])


def _four_shifts(shift: int) -> Tuple[Tuple[int, int], ...]:
    """(dy, dx) of the four misalignments a contrast compares against: ``shift`` pixels right, left, down, up."""
    return ((0, shift), (0, -shift), (shift, 0), (-shift, 0))


def _gain(aligned: float, shifted: float) -> float:
    """The contrast of an alignment: how much of what was left to gain over ``shifted`` similarity ``aligned`` wins."""
    return (aligned - shifted) / max(1e-6, 1.0 - shifted)


def _shift_contrast(
    query: torch.Tensor, rendered: torch.Tensor, valid: torch.Tensor, aligned: float, shift: int
) -> float:
    """How much better the render agrees with the query where the pose puts it than ``shift`` pixels off, as a share
    of what was left to gain: (aligned - shifted) / (1 - shifted), shifted the mean of four shifts' median similarity.
    ``query``, ``rendered``: (D, h, w) unit features; ``valid``: (h, w). Scene-relative where the similarity is not:
    a smooth scene scores high everywhere, a wrong pose no better aligned than off."""
    height, width = valid.shape
    if height <= shift or width <= shift:
        return float("nan")
    medians = []
    for dy, dx in _four_shifts(shift):
        rows_q, rows_r = slice(max(0, dy), height + min(0, dy)), slice(max(0, -dy), height + min(0, -dy))
        cols_q, cols_r = slice(max(0, dx), width + min(0, dx)), slice(max(0, -dx), width + min(0, -dx))
        both = valid[rows_q, cols_q] & valid[rows_r, cols_r]
        if bool(both.any()):
            sim = (query[:, rows_q, cols_q] * rendered[:, rows_r, cols_r]).sum(0)[both]
            medians.append(float(sim.median()))
    if not medians:
        return float("nan")
    return _gain(aligned, float(np.mean(medians)))


def _index_contrast(descriptors: torch.Tensor, pixels: np.ndarray, feature_map: torch.Tensor, shift: int) -> float:
    """``_shift_contrast`` without a render: the map's cells ((N, D) descriptors of the training images) against the
    query's features (``feature_map`` (D, H, W)) where the pose projects them (``pixels`` (N, 2), centres at +0.5)
    and ``shift`` pixels off. At a wrong pose most cells land on the wrong texture, aligned or not."""
    _, height, width = feature_map.shape
    col = np.floor(pixels[:, 0]).astype(np.int64)
    row = np.floor(pixels[:, 1]).astype(np.int64)
    flat = feature_map.reshape(feature_map.shape[0], -1)
    descriptors = descriptors.to(flat.device)

    def median_similarity(dy: int, dx: int) -> float:
        r, c = row + dy, col + dx
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        if not inside.any():
            return float("nan")
        at = torch.from_numpy(r[inside] * width + c[inside]).to(flat.device)
        mine = descriptors[torch.from_numpy(inside).to(flat.device)].float()
        return float((mine * flat[:, at].T.float()).sum(1).median())

    shifted = [median_similarity(dy, dx) for dy, dx in _four_shifts(shift)]
    if all(np.isnan(shifted)):
        return float("nan")
    return _gain(median_similarity(0, 0), float(np.nanmean(shifted)))


def _cell_centres(height: int, width: int, stride: float) -> torch.Tensor:
    """Pixel coordinates (x, y) of the centres of an (height, width) grid of cells of size ``stride``."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return (torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5) * stride


class CrossfireMatcher(FeatureMatcher):
    """Matches the query's CNN features against the map's descriptors (see ``CrossfireMatcherConfig``)."""

    config: CrossfireMatcherConfig

    @property
    def coarse_radius_px(self) -> int:  # type: ignore[override]
        return self.config.coarse_guided_radius_px

    @property
    def fallback_radius_px(self) -> int:  # type: ignore[override]
        return self.config.fallback_guided_radius_px

    @property
    def refine_radius_px(self) -> int:  # type: ignore[override]
        return self.config.guided_radius_px

    # ------------------------------------------------------------------ the index path

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        if self.config.coarse == "render" or self.crossfire_map is None:
            return super().estimate(image, K, priors)
        return self._estimate_from_index(image, K, priors)

    def _pnp(self, points3d, points2d, K, threshold_px: float, image_shape) -> PnPResult:
        config = self.config
        if config.solver == "opencv":
            result = solve_pnp_ransac(
                points3d, points2d, K, reprojection_threshold_px=threshold_px,
                iterations=config.ransac_iterations, min_inliers=config.min_inliers,
            )  # fmt: skip
        else:
            result = solve_pnp_poselib(
                points3d, points2d, K, reprojection_threshold_px=threshold_px, iterations=config.ransac_iterations,
                min_inliers=config.min_inliers, image_size=(image_shape[1], image_shape[0]),
                min_iterations=config.ransac_min_iterations, max_points=config.ransac_max_points,
            )  # fmt: skip
        return self.refuse_low_inlier_ratio(result, len(points3d))

    def index(self) -> MapIndex:
        """The map index (loaded from beside the map, or built and stored there once)."""
        config = self.config.index
        if self.config.index_fine_round and not config.fine_cells:
            config = replace(config, fine_cells=True)
        return map_index(self.crossfire_map, config)

    def index_on(self, device: torch.device) -> MapIndex:
        """``index()`` with the cells' descriptors on ``device`` (the query features'): on a GPU the matching runs
        there; points and pixels stay on the CPU for PnP. Moved once per index."""
        index = self.index()
        if torch.device(device).type == "cpu":
            return index

        def moved(cells: List[ViewCells]) -> List[ViewCells]:
            return [replace(c, descriptors=c.descriptors.to(device)) for c in cells]

        # cached beside the index itself (same map, same lifetime): id() names that cached object
        return self.crossfire_map.cached(
            ("map_index_on", id(index), str(device)),
            lambda: replace(index, views=moved(index.views), fine=moved(index.fine)),
        )

    def warm_up(self) -> None:
        if self.config.coarse == "index" and self.crossfire_map is not None:
            self.index()

    def _query_cells(self, query: dict, cell: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The query's features pooled to index-sized cells: ((M, D) descriptors of textured cells, (M, 2) pixels)."""
        if "cells" not in query or query["cells"][0] != cell:
            full = query["feature_map"]  # (D, H, W), zero where untextured
            height, width = full.shape[1:]
            h, w = height // cell, width // cell
            pooled = F.avg_pool2d(full[None, :, : h * cell, : w * cell], cell)[0]
            norm = pooled.norm(dim=0)
            keep = (norm > 0.5).reshape(-1)
            descriptors = F.normalize(pooled, dim=0).reshape(pooled.shape[0], -1).T[keep].contiguous()
            pixels = _cell_centres(h, w, float(cell))[keep.cpu()]
            query["cells"] = (cell, descriptors, pixels)
        return query["cells"][1], query["cells"][2]

    def _estimate_from_index(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        config = self.config
        start = time.perf_counter()
        query = self.prepare_query(image)
        index = self.index_on(query["feature_map"].device)
        priors = list(priors)[: config.num_priors]
        # a lone prior (a poses file, the previous frame) is not a training view: try its top_k nearest views
        per_prior = config.views_per_prior if len(priors) > 1 else max(config.views_per_prior, config.top_k)
        views: List[int] = []
        first = 0  # how many of ``views`` come from the first index_top_k priors
        for number, prior in enumerate(priors):
            for view in index.nearest_views(prior, per_prior):
                if view not in views:
                    views.append(view)
            if number < config.index_top_k:
                first = len(views)
        found: List[Tuple[PnPResult, int, int]] = []
        history: List[int] = []
        tried, reason = self._coarse_hypotheses(index, query, K, image.shape, views[:first], found, history)
        estimate, diagnostics, doubt = self._refined(index, query, image, K, found, history, reason, len(tried))
        estimate.seconds_coarse = time.perf_counter() - start - estimate.seconds_refine
        untried = [view for view in views if view not in tried]
        if untried and (doubt or not estimate.success):  # not confirmed: the further retrieved views too
            refined_before = [id(hypothesis) for hypothesis in self._candidates(found)]
            more, reason = self._coarse_hypotheses(index, query, K, image.shape, untried, found, history)
            views_tried = len(tried) + len(more)
            if [id(hypothesis) for hypothesis in self._candidates(found)] != refined_before:
                first_try = estimate
                estimate, diagnostics, doubt = self._refined(
                    index, query, image, K, found, history, reason, views_tried
                )
                estimate.seconds_refine += first_try.seconds_refine
            # else: no new hypothesis among those refined, so refining again would repeat the first pass exactly
            diagnostics.update(retried=1, views_tried=views_tried)
            estimate.seconds_coarse = time.perf_counter() - start - estimate.seconds_refine
        if doubt and not config.report_unconfirmed:
            estimate = PoseEstimate(
                False, num_matches=estimate.num_matches, history=history, seconds_coarse=estimate.seconds_coarse,
                seconds_refine=estimate.seconds_refine, confidence=estimate.confidence, diagnostics=diagnostics,
                message=f"the map does not confirm the pose ({doubt})",
            )  # fmt: skip
        return estimate

    def _coarse_hypotheses(
        self, index: MapIndex, query: dict, K, image_shape, views: Sequence[int], found: list, history: List[int]
    ) -> Tuple[List[int], str]:
        """Match the query's cells against each of ``views``' cells and solve PnP, appending each pose found to
        ``found`` as (PnP result, matches, view) and each inlier count to ``history``; stops early once a hypothesis
        is clearly good. Returns the views tried and why the last one failed."""
        config = self.config
        tried: List[int] = []
        reason = "no prior given"
        for view in views:
            tried.append(view)
            cells = index.views[view]
            # a cell covers the same part of the scene in the query as in the view (queries come at about the
            # training focal length, see api.MapLocalizer.max_side_for)
            cell = max(1, int(round(float(index.cell_px[view]) * K[0, 0] / float(index.Ks[view][0, 0]))))
            descriptors, pixels = self._query_cells(query, cell)
            idx_v, idx_q, _ = mutual_nearest_neighbours(cells.descriptors, descriptors, config.min_similarity)
            idx_v, idx_q = idx_v.cpu(), idx_q.cpu()
            points3d = cells.points[idx_v].numpy().astype(np.float64)
            points2d = pixels[idx_q].numpy().astype(np.float64)
            result = self._pnp(points3d, points2d, K, config.reprojection_threshold_px, image_shape)
            history.append(result.num_inliers)
            if not result.success:
                reason = result.message
                continue
            found.append((result, len(points3d), view))
            if result.num_inliers >= config.early_exit_inliers and result.num_inliers >= config.early_exit_ratio * len(
                points3d
            ):
                break
        return tried, reason

    def _candidates(self, found: list) -> list:
        """The coarse hypotheses ``found`` that ``_refined`` tries: the ``index_hypotheses`` with most inliers
        (``found`` is sorted in place, stable: the earlier prior wins a tie)."""
        found.sort(key=lambda hypothesis: -hypothesis[0].num_inliers)
        return found[: max(1, self.config.index_hypotheses)]

    def _refined(
        self, index: MapIndex, query: dict, image: np.ndarray, K, found: list, history: List[int], reason: str,
        views_tried: int,
    ) -> Tuple[PoseEstimate, dict, Optional[str]]:  # fmt: skip
        """The best of the coarse hypotheses ``found``, refined on the index (trial rounds, refinement rounds, patch
        rounds), with its diagnostics and why the confidence floors doubt it (None: confirmed)."""
        config = self.config
        if not found:
            failed = PoseEstimate(False, message=reason, history=history)
            return failed, failed.diagnostics, None
        refine_start = time.perf_counter()
        candidates = self._candidates(found)
        if len(candidates) > 1:  # one round at the first radius each; the most refined inliers wins
            trials, scores = [], []
            last = len(config.index_refine_radius_px) == 1 and config.diagnostic_figures  # the only round
            for r, n, _ in candidates:
                trial = self._refine_on_index(
                    index, query, K, localized(r, n).c2w, config.index_refine_radius_px[0], image.shape, diagnose=last
                )
                trials.append(trial)
                scores.append(trial[0].num_inliers if trial[0].success else 0)
            history.extend(scores)
            winner = int(np.argmax(scores))
            best, first_round = candidates[winner], trials[winner]  # its trial is its first refinement round
        else:
            best, first_round = candidates[0], None
        result, num_matches, _ = best
        coarse_ratio = result.num_inliers / max(1, num_matches)
        estimate = localized(result, num_matches)
        coarse_c2w = estimate.c2w
        diagnostics = {
            "views_tried": views_tried,
            "hypotheses_refined": len(candidates),
            "coarse_inliers": result.num_inliers,
            "coarse_matches": num_matches,
            "coarse_ratio": coarse_ratio,
        }
        schedule, position, repeats, rounds = list(config.index_refine_radius_px), 0, 0, 0
        while position < len(schedule):
            radius = schedule[position]
            before = estimate.c2w
            if first_round is not None:  # the winning hypothesis's trial round, not run twice
                refined, num, projected, disagreement, centre_sigma = first_round
                first_round = None
            else:
                refined, num, projected, disagreement, centre_sigma = self._refine_on_index(
                    index,
                    query,
                    K,
                    estimate.c2w,
                    radius,
                    image.shape,
                    diagnose=config.diagnostic_figures and position == len(schedule) - 1,
                )
                history.append(refined.num_inliers)
            rounds += 1
            diagnostics.update(
                refine_inliers=refined.num_inliers, refine_matches=num, refine_projected=projected,
                refine_ratio=refined.num_inliers / max(1, num), refine_coverage=num / max(1, projected),
                view_disagreement_deg=disagreement, refine_rounds=rounds,
                centre_sigma=centre_sigma / index.extent,
            )  # fmt: skip
            if not refined.success:
                estimate = PoseEstimate(False, num_matches=num, message=f"refinement failed: {refined.message}")
                break
            estimate = localized(refined, num)
            moved = rotation_angle_deg(estimate.c2w[:3, :3].T @ before[:3, :3])
            if position == 0 and moved > config.index_refine_settle_deg and repeats < config.index_refine_repeats:
                repeats += 1  # the first radius again, from where this round left the estimate
            else:
                position += 1
        if estimate.success and config.index_fine_round:
            fine, num, projected, _, _ = self._refine_on_index(
                index, query, K, estimate.c2w, schedule[-1], image.shape, fine=True
            )  # fmt: skip
            history.append(fine.num_inliers)
            diagnostics.update(fine_inliers=fine.num_inliers, fine_matches=num, fine_projected=projected)
            if fine.success:
                refined_c2w = estimate.c2w
                estimate = localized(fine, num)
                diagnostics["fine_rotation_deg"] = rotation_angle_deg(estimate.c2w[:3, :3].T @ refined_c2w[:3, :3])
        if estimate.success and config.index_patch_rounds > 0:
            estimate = self._patch_rounds(index, image, K, estimate, diagnostics, history)
        if estimate.success:
            for _ in range(config.render_refinements):
                rendered, num = self._round(
                    query, image.shape, K, estimate.c2w, image.shape[1], self.refine_radius_px,
                    config.refine_reprojection_threshold_px,
                )  # fmt: skip
                history.append(rendered.num_inliers)
                if not rendered.success:
                    estimate = PoseEstimate(False, num_matches=num, message=f"refinement failed: {rendered.message}")
                    break
                estimate = localized(rendered, num)
        if estimate.success:
            diagnostics["refine_rotation_deg"] = rotation_angle_deg(estimate.c2w[:3, :3].T @ coarse_c2w[:3, :3])
            fitted = _stacked_cells(index.views, self.refine_views(index, estimate.c2w, K, image.shape))
            diagnostics["refine_contrast"] = self._cell_contrast(*fitted, query, K, estimate.c2w, image.shape)
            if config.diagnostic_figures:
                diagnostics.update(self._held_out_views(index, query, K, estimate.c2w, schedule[-1], image.shape))
            if config.render_check:
                diagnostics.update(self._render_agreement(query, K, estimate.c2w, image.shape))
        estimate.history = history
        estimate.seconds_refine = time.perf_counter() - refine_start
        estimate.confidence = self.confidence(diagnostics)
        estimate.diagnostics = diagnostics
        doubt = unconfirmed(diagnostics, estimate.confidence, config) if estimate.success else None
        return estimate, diagnostics, doubt

    def _patch_rounds(self, index: MapIndex, image: np.ndarray, K, estimate: PoseEstimate, diagnostics: dict,
                      history: List[int]) -> PoseEstimate:  # fmt: skip
        """``index_patch_rounds`` rounds of ``_align_patches`` from ``estimate``: their pose when every round finds
        at least ``patch_min_share`` of the patches it searched, else ``estimate`` unchanged (the reason recorded)."""
        config = self.config
        grey = self._query_grey(image)
        aligned_estimate = estimate
        for position in range(config.index_patch_rounds):
            search = config.patch_search_px[min(position, len(config.patch_search_px) - 1)]
            aligned, num, searched = self._align_patches(index, grey, K, aligned_estimate.c2w, search)
            history.append(aligned.num_inliers)
            diagnostics.update(patch_inliers=aligned.num_inliers, patch_matches=num, patch_searched=searched)
            if aligned.success and num < config.patch_min_share * searched:
                aligned = PnPResult(False, message=f"{num} of {searched} patches found")
            if not aligned.success:
                diagnostics["patch_failed"] = f"round {position + 1}: {aligned.message}"
                return estimate
            aligned_estimate = localized(aligned, num)
        diagnostics["patch_rotation_deg"] = rotation_angle_deg(aligned_estimate.c2w[:3, :3].T @ estimate.c2w[:3, :3])
        return aligned_estimate

    @staticmethod
    def confidence(diagnostics: dict) -> float:
        """How sure the index path is of its pose: the share of the last refinement's guided matches that the pose
        explains (right poses 0.65-0.9, wrong ones 0.54-0.64 on the calibration scenes, BENCHMARKS.md)."""
        return float(diagnostics.get("refine_ratio", float("nan")))

    def refine_views(self, index: MapIndex, c2w: np.ndarray, K, image_shape, k: Optional[int] = None) -> List[int]:
        """The ``k`` (default ``index_refine_views``) training views whose cells the refinement matches at ``c2w``
        (``index_refine_view_choice``)."""
        k = self.config.index_refine_views if k is None else k
        choice = self.config.index_refine_view_choice
        if choice == "nearest":
            return index.nearest_views(c2w, k)
        size = (image_shape[1], image_shape[0])
        if choice == "covisible":
            config = self.config
            return index.covisible_views(
                c2w, K, size, k, config.index_covisible_angle_deg, config.index_covisible_share
            )
        return index.overlapping_views(c2w, K, size, k)

    def _refine_on_index(
        self,
        index: MapIndex,
        query: dict,
        K,
        c2w: np.ndarray,
        radius: float,
        image_shape,
        fine: bool = False,
        diagnose: bool = True,
    ):
        """Cells of the refinement views at ``c2w`` (``refine_views``), matched in the query near where ``c2w``
        projects them (``fine``: the index's 1-pixel cells, and no per-view disagreement or centre uncertainty: NaN;
        not ``diagnose``: no per-view disagreement, which costs a PnP per view).

        Returns (PnPResult, matches, cells projected into the query, per-view disagreement in degrees: the largest
        rotation between the joint pose and the pose from one view's matches alone, NaN when fewer than two views
        have enough matches; biased depth differs between views, so biased poses disagree; and how loosely the
        inliers hold the camera centre, world units, ``camera_centre_sigma``)."""
        cells = index.fine if fine else index.views
        views = self.refine_views(index, c2w, K, image_shape)
        points3d, descriptors = _stacked_cells(cells, views)
        source = np.concatenate([np.full(len(cells[v].points), v) for v in views])
        pixels, keep = _projected_inside(points3d, c2w, K, image_shape, margin=radius + 1)
        if len(keep) == 0:
            return (
                PnPResult(False, message="no index cell projects into the query at the estimate"),
                0,
                0,
                np.nan,
                np.nan,
            )
        device = query["feature_map"].device
        rendered = descriptors[torch.from_numpy(keep).to(descriptors.device)].to(device)
        expected = torch.from_numpy(pixels[keep]).float().to(device)
        search = two_level_guided_matches if radius > self.config.index_two_level_above_px else guided_matches
        found, xy, _ = search(
            rendered, expected, query["feature_map"], int(np.ceil(radius)), self.config.min_similarity
        )
        found = found.cpu().numpy()
        points3d = points3d[keep][found]
        source = source[keep][found]
        points2d = xy.cpu().numpy().astype(np.float64)
        threshold = self.config.refine_reprojection_threshold_px
        result = self._pnp(points3d, points2d, K, threshold, image_shape)
        disagreement = np.nan
        centre_sigma = np.nan
        if result.success and not fine:
            inliers = result.inliers
            centre_sigma = camera_centre_sigma(points3d[inliers], points2d[inliers], K, result.R, result.t)
        if result.success and not fine and diagnose:
            angles = []
            for view in np.unique(source):
                mine = source == view
                if mine.sum() < 2 * self.config.min_inliers:
                    continue
                alone = self._pnp(points3d[mine], points2d[mine], K, threshold, image_shape)
                if alone.success:
                    angles.append(rotation_angle_deg(alone.R @ result.R.T))
            if len(angles) >= 2:
                disagreement = float(max(angles))
        return result, len(points3d), len(keep), disagreement, centre_sigma

    def _training_grey(self, view: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Training image ``view`` as (H, W) grey levels (0-1), and its patch contrast (``local_contrast``)."""
        return training_greys(self.crossfire_map, self.config.patch_radius_px, self.config.patch_smoothing_px)[view]

    def _query_grey(self, image: np.ndarray) -> torch.Tensor:
        """The query (H, W, 3) uint8 as the patch rounds compare it: (H, W) grey levels (0-1), ``smoothed_grey``."""
        return smoothed_grey(
            torch.from_numpy(np.ascontiguousarray(image)).float() / 255.0, self.config.patch_smoothing_px
        )

    def _align_patches(self, index: MapIndex, grey: torch.Tensor, K, c2w: np.ndarray, search: int):
        """The most contrasted trusted cells of the refinement views at ``c2w``, each found in the query (``grey``
        (H, W), ``_query_grey``) by normalised cross-correlation of its training patch
        (``patch_alignment.align_patches``) from where ``c2w`` projects it, within ``search`` pixels; then PnP.
        Returns (PnPResult, matches, cells searched)."""
        config = self.config
        R_query, t_query = opengl_c2w_to_opencv_w2c(c2w)
        margin = config.patch_radius_px + search + 2
        views = self.refine_views(index, c2w, K, grey.shape)
        points3d, points2d, searched = [], [], 0
        for view in views:
            cells = index.views[view]
            points = (cells.points if cells.patch_points is None else cells.patch_points).numpy().astype(np.float64)
            _, keep = _projected_inside(points, c2w, K, grey.shape, margin=margin)
            view_grey, contrast = self._training_grey(view)
            (K_view, R_view, t_view), scale = view_camera(index, view, view_grey)
            rich = cell_contrast(cells.pixels.numpy()[keep], contrast, scale) >= config.patch_min_contrast
            keep = keep[rich]
            budget = max(1, config.patch_max_cells // len(views))
            if len(keep) > budget:  # evenly over the view (the most contrasted patches straddle occlusion edges)
                keep = keep[np.linspace(0, len(keep) - 1, budget).round().astype(np.int64)]
            if len(keep) == 0:
                continue
            searched += len(keep)
            xy, score, ok = align_patches(
                grey, view_grey, K_view, R_view, t_view, points[keep], K, R_query, t_query, config.patch_radius_px,
                search,
            )  # fmt: skip
            ok &= score >= config.patch_min_ncc
            points3d.append(points[keep][ok.numpy()])
            points2d.append(xy[ok.numpy()])
        if not points3d:
            return PnPResult(False, message="no training patch found in the query"), 0, searched
        points3d, points2d = np.concatenate(points3d), np.concatenate(points2d)
        result = self._pnp(points3d, points2d, K, config.patch_reprojection_threshold_px, grey.shape)
        return result, len(points3d), searched

    @staticmethod
    def _cell_contrast(points: np.ndarray, descriptors: torch.Tensor, query: dict, K, c2w: np.ndarray, image_shape):
        """``_index_contrast`` of cells ((N, 3) points, (N, D) descriptors, ``_stacked_cells``) at ``c2w`` (NaN when
        none projects into the query): shifted by a twentieth of the query's width, as ``_render_agreement`` shifts
        its render."""
        pixels, keep = _projected_inside(points, c2w, K, image_shape, margin=1.0)
        if len(keep) == 0:
            return float("nan")
        shift = max(2, round(image_shape[1] / 20))
        return _index_contrast(
            descriptors[torch.from_numpy(keep).to(descriptors.device)], pixels[keep], query["feature_map"], shift
        )

    def _held_out_views(self, index: MapIndex, query: dict, K, c2w: np.ndarray, radius: float, image_shape) -> dict:
        """How the training views just beyond those the pose was fitted to see the query at ``c2w``: the share of
        their projected cells that find a distinct match within ``radius`` (``holdout_coverage``), the share of
        those within ``refine_reprojection_threshold_px`` of where ``c2w`` puts them (``holdout_ratio``), and their
        ``holdout_contrast`` (``_cell_contrast``). Matches the pose was not fitted to: at a wrong pose they land on
        the wrong texture."""
        n = self.config.index_refine_views
        views = self.refine_views(index, c2w, K, image_shape, 2 * n)[n:]
        if not views:
            return {}
        points, descriptors = _stacked_cells(index.views, views)
        pixels, keep = _projected_inside(points, c2w, K, image_shape, margin=radius + 1)
        if len(keep) == 0:
            return {"holdout_coverage": 0.0, "holdout_ratio": 0.0}
        device = query["feature_map"].device
        expected = torch.from_numpy(pixels[keep]).float().to(device)
        found, xy, _ = guided_matches(
            descriptors[torch.from_numpy(keep).to(descriptors.device)].to(device), expected, query["feature_map"],
            int(np.ceil(radius)), self.config.min_similarity,
        )  # fmt: skip
        error = (xy - expected[found]).norm(dim=1)
        within = float((error <= self.config.refine_reprojection_threshold_px).float().mean()) if len(found) else 0.0
        return {
            "holdout_coverage": len(found) / len(keep),
            "holdout_ratio": within,
            "holdout_contrast": self._cell_contrast(points, descriptors, query, K, c2w, image_shape),
        }

    @torch.no_grad()
    def _render_agreement(self, query: dict, K, c2w: np.ndarray, image_shape) -> dict:
        """The query's CNN features against those of the map's colour rendered at ``c2w`` (``render_check``)."""
        height_q, width_q = image_shape[:2]
        width = min(self.config.render_check_width, width_q)
        height = max(1, round(height_q * width / width_q))
        view = self.renderer.render(c2w, scale_intrinsics(K, width / width_q, height / height_q), width, height)
        rendered = self.rendered_descriptors(view, query).permute(2, 0, 1).cpu()  # (D, h, w)
        pooled = F.interpolate(query["feature_map"][None].cpu(), size=(height, width), mode="area")[0]
        textured = pooled.norm(dim=0) > 0.5
        covered = view.accumulation[..., 0].cpu() > MIN_ACCUMULATION
        valid = textured & covered
        if not bool(valid.any()):
            return {"render_agreement": 0.0, "render_similarity": 0.0}
        query_n, rendered_n = F.normalize(pooled, dim=0), F.normalize(rendered, dim=0)
        similarity = (query_n * rendered_n).sum(0)[valid]
        aligned = float(similarity.median())
        return {
            "render_agreement": float((similarity >= self.config.min_similarity).float().mean()),
            "render_similarity": aligned,
            "render_contrast": _shift_contrast(query_n, rendered_n, valid, aligned, max(1, round(width / 20))),
        }

    @torch.no_grad()
    def rendered_descriptors(self, view: RenderedView, query: dict) -> torch.Tensor:
        """(h, w, D) descriptors of the render: the field's, or the CNN's features of the rendered colour.

        The CNN is not scale-invariant, so a render smaller than the query is upsampled to the query's size
        before the CNN sees it (as the query was), and its features are pooled back to the render's pixels."""
        if self.config.descriptor_source == "field":
            return view.descriptor
        size = tuple(view.rgb.shape[:2])
        rgb = view.rgb.clamp(0, 1).permute(2, 0, 1)[None]
        query_size = tuple(query["feature_map"].shape[1:])
        if query_size != size:
            rgb = F.interpolate(rgb, size=query_size, mode="bilinear", align_corners=False)
        features = self.model.encode_images(rgb.permute(0, 2, 3, 1))
        if features.shape[-2:] != size:
            features = F.interpolate(features, size=size, mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(features[0], dim=0).permute(1, 2, 0)

    @torch.no_grad()
    def prepare_query(self, image: np.ndarray) -> dict:
        """Dense features of the query (H, W, 3 uint8) and the image pixel each feature cell covers."""
        tensor = torch.from_numpy(np.array(image)).float().div(255.0)[None]
        features = self.model.encode_images(tensor)[0]  # (D, h, w)
        # No texture, no correspondence: zero the features of flat regions (a blank image, a white wall), so
        # that they never pass the similarity threshold (the CNN would otherwise answer with padding artefacts).
        grey = tensor[0, ..., :3].mean(-1).to(features.device)[None, None]
        local_std = (
            (
                F.avg_pool2d(grey.square(), 5, 1, 2, count_include_pad=False)
                - F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False).square()
            )
            .clamp(min=0)
            .sqrt()
        )
        textured = F.interpolate(local_std, size=features.shape[-2:], mode="area")[0, 0] > MIN_TEXTURE
        features = features * textured
        stride = image.shape[0] / features.shape[1]
        flat = features.reshape(features.shape[0], -1).T.contiguous()
        full = F.interpolate(features[None], size=image.shape[:2], mode="bilinear", align_corners=False)[0]
        full = F.normalize(full, dim=0) * (full.norm(dim=0, keepdim=True) > 0.5)
        return {
            "features": flat,
            "pixels": _cell_centres(features.shape[1], features.shape[2], stride),
            "feature_map": full,  # (D, H, W): one cell per query pixel, for guided matching
        }

    def match(self, query: dict, view: RenderedView) -> Correspondences:
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1)
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1])[valid], dim=-1)
        points = view.points.reshape(-1, 3)[valid]
        idx_r, idx_q, sim = mutual_nearest_neighbours(
            rendered, query["features"].to(rendered.device), self.config.min_similarity
        )
        return Correspondences(
            points3d=points[idx_r].cpu().numpy().astype(np.float64),
            points2d=query["pixels"][idx_q.cpu()].numpy().astype(np.float64),
            scores=sim.cpu().numpy(),
        )

    def match_near(self, query: dict, view: RenderedView, radius_px: int) -> Correspondences:
        """Each rendered pixel's best match within ``radius_px`` of where it lies in the query (the view is
        rendered at the current estimate with the query's intrinsics, scaled), at sub-pixel precision."""
        feature_map = query["feature_map"]
        height, width = view.depth.shape[:2]
        scale = torch.tensor([feature_map.shape[2] / width, feature_map.shape[1] / height])
        valid = (view.accumulation[..., 0] > MIN_ACCUMULATION).reshape(-1).cpu()
        expected = (_cell_centres(height, width, 1.0) * scale)[valid]
        descriptors = self.rendered_descriptors(view, query)
        rendered = F.normalize(descriptors.reshape(-1, descriptors.shape[-1]), dim=-1).cpu()[valid]
        points = view.points.reshape(-1, 3).cpu()[valid]
        index, xy, sim = guided_matches(rendered, expected, feature_map, radius_px, self.config.min_similarity)
        return Correspondences(
            points3d=points[index].numpy().astype(np.float64),
            points2d=xy.numpy().astype(np.float64),
            scores=sim.numpy(),
        )
