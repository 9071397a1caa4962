"""crossfire: the query's CNN features against the map index, then patches, then a verdict; it renders only to
check a pose no training camera was near.

The stages, in order (``CrossfireMatcher.estimate``): the retrieved training views (``coarse.retrieved_views``),
a pose hypothesis from each view's index cells (``coarse.coarse_hypotheses``), trial and refinement rounds against
the cells of the views that see what the query sees (``refine.refine``), grey-level patch rounds
(``patch_rounds.patch_rounds``), optional render rounds, the map's verdict (``verify.verdict``), and for a confirmed
pose no training camera was near, the novel-view check (``CrossfireMatcher.novel_view_check``). A pose the map does
not confirm sends the query on through further retrieved views before it is reported as failed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import track

from crossfire_ns.geometry import pose_error_vector, rotation_angle_deg
from crossfire_ns.io.queries import downscale_to
from crossfire_ns.localize.coarse import (
    CoarseConfig,
    CoarseResult,
    RetrievalConfig,
    best_positions,
    coarse_hypotheses,
    retrieved_views,
)
from crossfire_ns.localize.map_index import MapIndex, MapIndexConfig, ViewCells, index_path, map_index
from crossfire_ns.localize.matchers.base import Matcher, MatcherConfig, PoseEstimate
from crossfire_ns.localize.matchers.crossfire_render import CrossfireRenderMatcherConfig, DescriptorSource
from crossfire_ns.localize.matchers.feature import localized
from crossfire_ns.localize.patch_alignment import PatchConfig
from crossfire_ns.localize.patch_rounds import PatchRefinement, patch_rounds
from crossfire_ns.localize.pnp import PnPConfig, PoseSolver, mahalanobis_squared
from crossfire_ns.localize.query_features import QueryFeatures, encode_query
from crossfire_ns.localize.refine import RefineConfig, Refinement, hypothesis_c2w, refine
from crossfire_ns.localize.verify import (
    FAILED,
    Evidence,
    Verdict,
    VerifyConfig,
    centre_widening,
    fitted_contrast,
    held_out_agreement,
    verdict,
)


@dataclass
class RenderRoundsConfig:
    """Optional renders of the map at the estimate (the index path renders nothing by default)."""

    refinements: int = 0
    """Render-match-PnP rounds at the query's resolution after the patch rounds, on every query."""
    novel_view_deg: float = 12.0
    """Check a confirmed pose turned this far from every training view with a render at it (inf: never): there the
    CNN's matches to the stored views can drift together, and matches to a render from the estimate do not."""
    novel_view_agreement_deg: float = 2.0
    """The estimate stands when the render's pose agrees with it within this angle; otherwise renders follow the
    render's pose until one agrees with the pose it started from, and that pose is reported."""
    novel_view_max_renders: int = 3
    """Renders of the novel-view check before a pose that has not settled fails the query."""
    novel_view_width: int = 96
    """Width of the novel-view check's renders (at most the query's): a render's cost grows with its pixels."""
    descriptor_source: DescriptorSource = "rendered-rgb"
    """What those rounds match: the descriptor field, or the CNN of the rendered colour."""
    guided_radius_px: int = 6
    """Their search radius around the estimate's projection (query pixels)."""
    check: bool = False
    """Record how well the map's colour rendered at the final pose agrees (one render)."""
    check_width: int = 80
    """Width of the render of check."""


@dataclass
class CrossfireMatcherConfig(MatcherConfig):
    """The query's CNN features against the map index: coarse hypotheses, refinement and patch rounds, a verdict."""

    _target: Type = field(default_factory=lambda: CrossfireMatcher)
    min_similarity: float = 0.6
    """Cosine-similarity threshold on every CNN match."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    pnp: PnPConfig = field(default_factory=PnPConfig)
    render: RenderRoundsConfig = field(default_factory=RenderRoundsConfig)
    index: MapIndexConfig = field(default_factory=MapIndexConfig)
    covariance_views: int = 16
    """Training views localized without their own cells, once per map index, to measure how much the map's depth
    widens the pose covariance (0: not measured, not widened for the map)."""

    @property
    def num_priors(self) -> int:
        return self.retrieval.num_priors

    @property
    def renders_descriptors(self) -> bool:
        render = self.render
        rounds = render.refinements > 0 or render.novel_view_deg < float("inf")
        return rounds and render.descriptor_source == "field"

    def without_floors(self) -> "CrossfireMatcherConfig":
        """These settings with every confidence floor switched off."""
        return replace(self, verify=self.verify.without_floors())

    def render_matcher(self) -> CrossfireRenderMatcherConfig:
        """The render matcher that runs the render rounds and the render check with these settings."""
        return CrossfireRenderMatcherConfig(
            descriptor_source=self.render.descriptor_source, min_similarity=self.min_similarity,
            guided_radius_px=self.render.guided_radius_px,
            refine_reprojection_threshold_px=self.refine.reprojection_threshold_px,
            ransac_iterations=self.pnp.ransac_iterations, min_inliers=self.pnp.min_inliers,
            min_inlier_ratio=self.pnp.min_inlier_ratio,
        )  # fmt: skip


@dataclass
class IndexLocalization:
    """One pass of the index path from its coarse hypotheses to a verdict."""

    coarse: CoarseResult
    refinement: Optional[Refinement] = None
    """None when the coarse stage found no hypothesis."""
    patches: Optional[PatchRefinement] = None
    renders: List[tuple] = field(default_factory=list)
    """(PnPResult, matches) of each render round."""
    estimate: PoseEstimate = field(default_factory=lambda: PoseEstimate(False))
    """The pose the stages arrived at (before the verdict)."""
    evidence: Optional[Evidence] = None
    verdict: Verdict = FAILED
    figures: Dict[str, Any] = field(default_factory=dict)
    """Figures no floor reads (rotations between stages, held-out views, the render check)."""
    seconds_refine: float = 0.0
    extent: float = 1.0
    """The map's camera extent: the scale of the centre uncertainty."""

    def inlier_counts(self) -> List[int]:
        """Inliers of every round after the coarse stage, in the order run."""
        counts = self.refinement.inlier_counts() if self.refinement is not None else []
        counts += [r.pnp.num_inliers for r in self.patches.rounds] if self.patches is not None else []
        return counts + [pnp.num_inliers for pnp, _ in self.renders]


class CrossfireMatcher(Matcher):
    """The index path (see ``CrossfireMatcherConfig``); the render rounds use a ``CrossfireRenderMatcher``."""

    config: CrossfireMatcherConfig

    def __init__(self, config: CrossfireMatcherConfig, model, renderer) -> None:
        super().__init__(config, model, renderer)
        self.solve = PoseSolver(config.pnp)
        self.renders = config.render_matcher().setup(model=model, renderer=renderer)

    def estimate(
        self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray], index: Optional[MapIndex] = None
    ) -> PoseEstimate:
        """Retrieve -> coarse hypotheses -> refinement -> patch rounds -> verdict, with a second pass through further
        retrieved views for a pose the map does not confirm. ``index``: match against it instead of the map's (the
        covariance self-check's, without one view's cells)."""
        config, start = self.config, time.perf_counter()
        query = self.encode(image)
        index = self.index_on(query.device, index)
        views = retrieved_views(index, priors, config.retrieval)
        coarse = self.coarse(index, query, K, views.first)
        found = self.localize_from(index, query, K, coarse)
        history = coarse.inlier_counts + found.inlier_counts()
        seconds_refine = found.seconds_refine
        untried = [view for view in views.first + views.further if view not in coarse.tried]
        if untried and not found.verdict.confirmed:  # not confirmed: the further retrieved views too
            more = self.coarse(index, query, K, untried)
            both = coarse.extended(more)
            history += more.inlier_counts
            if self.candidates(both) != self.candidates(coarse):
                found = self.localize_from(index, query, K, both, second_pass=True)
                history += found.inlier_counts()
                seconds_refine += found.seconds_refine
            # else: no new hypothesis among those refined: refining again would repeat the first pass exactly
            found.figures.update(retried=1, views_tried=len(both.tried))
        return self.reported(found, history, seconds_refine, time.perf_counter() - start - seconds_refine)

    # ------------------------------------------------------------------ the stages on this map

    def encode(self, image: np.ndarray) -> QueryFeatures:
        """The query's features (``query_features.encode_query`` with this map's CNN)."""
        return encode_query(self.model, image)

    def coarse(self, index: MapIndex, query: QueryFeatures, K: np.ndarray, views: Sequence[int]) -> CoarseResult:
        """``coarse.coarse_hypotheses`` with these settings."""
        return coarse_hypotheses(index, query, K, views, self.config.coarse, self.solve, self.config.min_similarity)

    def candidates(self, coarse: CoarseResult) -> List[int]:
        """Which of ``coarse``'s hypotheses the refinement tries (their positions in ``coarse.hypotheses``)."""
        return best_positions(coarse.hypotheses, self.config.refine.hypotheses) if coarse.hypotheses else []

    def localize_from(
        self, index: MapIndex, query: QueryFeatures, K: np.ndarray, coarse: CoarseResult, second_pass: bool = False
    ):
        """The best of ``coarse``'s hypotheses refined, patch- and render-refined, and judged (``second_pass``: the
        hypotheses include those of the further retrieved views)."""
        config = self.config
        found = IndexLocalization(coarse, estimate=PoseEstimate(False, message=coarse.reason), extent=index.extent)
        if not coarse.hypotheses:
            return found
        start = time.perf_counter()
        candidates = [coarse.hypotheses[i] for i in self.candidates(coarse)]
        diagnose = config.verify.diagnostic_figures
        refinement = refine(index, query, K, candidates, config.refine, self.solve, config.min_similarity, diagnose)
        found.refinement = refinement
        last = refinement.last
        if not last.pnp.success:
            found.estimate = PoseEstimate(
                False, num_matches=last.num_matches, message=f"refinement failed: {last.pnp.message}"
            )
        else:
            final = refinement.final_round
            found.estimate = localized(final.pnp, final.num_matches)
            if config.patch.rounds > 0:
                found.patches = patch_rounds(
                    self.crossfire_map, index, query, K, found.estimate.c2w, config.patch, config.refine, self.solve
                )  # fmt: skip
                if found.patches.c2w is not None:
                    found.estimate = localized(found.patches.last.pnp, found.patches.last.num_matches)
            found.estimate = self.render_rounds(query, K, found)
        if found.estimate.success:
            found.figures.update(self.figures_at(index, query, K, found))
            patches_held = found.patches is None or found.patches.first_round_held
            widening = centre_widening(found.estimate.reprojection_error_px)
            found.figures.update(second_pass=int(second_pass), patches_held=int(patches_held), centre_widening=widening)
            patch_centre = float("nan")
            if found.patches is not None and found.patches.c2w is not None:  # the pose reported is the patches'
                patch_centre = found.patches.last.centre_sigma(K, config.verify.patch_noise_px) / index.extent
                found.figures["patch_centre_sigma"] = patch_centre
            found.evidence = Evidence(
                last.ratio, last.coverage, last.centre_sigma / index.extent, found.figures["refine_contrast"],
                centre_widening=widening, second_pass=second_pass, patches_held=patches_held,
                patch_centre_sigma=patch_centre,
            )  # fmt: skip
            found.verdict = verdict(found.evidence, config.verify)
            if found.verdict.confirmed and config.render.refinements == 0:
                found.estimate = self.checked_if_novel(index, query, K, found)
                if not found.estimate.success:
                    found.verdict = FAILED
        found.seconds_refine = time.perf_counter() - start
        return found

    def render_rounds(self, query: QueryFeatures, K: np.ndarray, found: IndexLocalization) -> PoseEstimate:
        """``render.refinements`` render-match-PnP rounds from ``found.estimate`` (none by default)."""
        estimate = found.estimate
        for _ in range(self.config.render.refinements):
            estimate = self.render_round(query, K, found, estimate, query.shape[1])
            if not estimate.success:
                break
        return estimate

    def checked_if_novel(
        self, index: MapIndex, query: QueryFeatures, K: np.ndarray, found: IndexLocalization
    ) -> PoseEstimate:
        """A confirmed estimate as it stands, or, when it is turned farther than ``render.novel_view_deg`` from every
        training view, as the novel-view check (``novel_view_check``) leaves it."""
        gap = index.rotation_gap_deg(found.estimate.c2w)
        found.figures["training_view_gap_deg"] = gap
        if gap <= self.config.render.novel_view_deg:
            return found.estimate
        return self.novel_view_check(query, K, found)

    def novel_view_check(self, query: QueryFeatures, K: np.ndarray, found: IndexLocalization) -> PoseEstimate:
        """The index estimate stands if the pose of a render at it agrees with it. If not, the index matches drifted:
        renders follow the render's pose until one agrees with the pose it started from (that pose is reported), and
        a pose that has not settled after ``render.novel_view_max_renders`` renders fails the query."""
        config = self.config.render
        current, turns = found.estimate, []
        for _ in range(config.novel_view_max_renders):
            rendered = self.render_round(query, K, found, current, config.novel_view_width)
            if not rendered.success:
                message = f"a render at the estimate does not confirm it ({rendered.message})"
                return PoseEstimate(False, num_matches=rendered.num_matches, message=message)
            turns.append(rotation_angle_deg(rendered.c2w[:3, :3].T @ current.c2w[:3, :3]))
            found.figures.update(novel_view_renders=len(turns), novel_view_render_deg=turns[-1])
            if turns[-1] <= config.novel_view_agreement_deg:
                return current if len(turns) == 1 else rendered
            current = rendered
        steps = " then ".join(f"{turn:.1f}" for turn in turns)
        return PoseEstimate(
            False, num_matches=current.num_matches, message=f"renders at the estimate do not settle ({steps} deg)"
        )

    def render_round(
        self, query: QueryFeatures, K: np.ndarray, found: IndexLocalization, estimate: PoseEstimate, width: int
    ) -> PoseEstimate:
        """One render-match-PnP round from ``estimate`` with a render ``width`` pixels wide
        (``FeatureMatcher.render_round``), recorded in ``found``."""
        pnp, num = self.renders.render_round(
            query, query.shape, K, estimate.c2w, width, self.config.render.guided_radius_px,
            self.config.refine.reprojection_threshold_px,
        )  # fmt: skip
        found.renders.append((pnp, num))
        if not pnp.success:
            return PoseEstimate(False, num_matches=num, message=f"refinement failed: {pnp.message}")
        return localized(pnp, num)

    def figures_at(self, index: MapIndex, query: QueryFeatures, K: np.ndarray, found: IndexLocalization) -> dict:
        """The figures of the final pose: its contrast (a floor reads it) and the diagnostics asked for."""
        config, c2w = self.config, found.estimate.c2w
        coarse_c2w = hypothesis_c2w(found.refinement.hypothesis)
        figures = {
            "refine_rotation_deg": rotation_angle_deg(c2w[:3, :3].T @ coarse_c2w[:3, :3]),
            "refine_contrast": fitted_contrast(index, query, K, c2w, config.refine),
        }
        if config.verify.diagnostic_figures:
            radius = config.refine.radius_px[-1]
            figures.update(held_out_agreement(index, query, K, c2w, radius, config.refine, config.min_similarity))
        if config.render.check:
            figures.update(self.renders.render_agreement(query, K, c2w, config.render.check_width))
        return figures

    def reported(
        self, found: IndexLocalization, history: List[int], seconds_refine: float, seconds_coarse: float
    ) -> PoseEstimate:
        """``found`` as ns-localize reports it: a pose the map doubts becomes a failure naming the floors (unless
        ``verify.report_unconfirmed``)."""
        estimate = found.estimate
        estimate.history = history
        estimate.seconds_refine, estimate.seconds_coarse = seconds_refine, seconds_coarse
        estimate.diagnostics = diagnostics(found)
        refinement = found.refinement
        estimate.confidence = refinement.last.ratio if refinement is not None else float("nan")
        if found.verdict.status == "doubted" and not self.config.verify.report_unconfirmed:
            return PoseEstimate(
                False, num_matches=estimate.num_matches, history=history, seconds_coarse=seconds_coarse,
                seconds_refine=seconds_refine, confidence=estimate.confidence, diagnostics=estimate.diagnostics,
                message=f"the map does not confirm the pose ({found.verdict.reason})",
            )  # fmt: skip
        return estimate

    # ------------------------------------------------------------------ the map index

    def index(self) -> MapIndex:
        """The map index (loaded from beside the map, or built and stored there once)."""
        config = self.config.index
        if self.config.refine.fine_round and not config.fine_cells:
            config = replace(config, fine_cells=True)
        return map_index(self.crossfire_map, config, self.config.patch)

    def index_on(self, device: torch.device, index: Optional[MapIndex] = None) -> MapIndex:
        """``index`` (default ``index()``) with the cells' descriptors on ``device`` (the query features'): on a GPU
        the matching runs there; points and pixels stay on the CPU for PnP. The map's index is moved once."""
        given = index is not None
        index = index if given else self.index()
        if torch.device(device).type == "cpu":
            return index

        def moved(cells: List[ViewCells]) -> List[ViewCells]:
            return [replace(c, descriptors=c.descriptors.to(device)) for c in cells]

        if given:  # a passing index: moved each time, never cached under a reusable id()
            return replace(index, views=moved(index.views), fine=moved(index.fine))
        # cached beside the index itself (same map, same lifetime): id() names that cached object
        return self.crossfire_map.cached(
            ("map_index_on", id(index), str(device)),
            lambda: replace(index, views=moved(index.views), fine=moved(index.fine)),
        )

    def warm_up(self) -> None:
        if self.crossfire_map is not None:
            self.index()

    def leave_one_out(self, max_side: int) -> List[Tuple[float, float]]:
        """``covariance_views`` training views, evenly spread, each localized from its own pose as the prior against
        the index without its cells (nor the virtual views made from it); measured once per index and floors
        (``verify``), and stored with the index."""
        views = self.config.covariance_views
        if views <= 0 or self.crossfire_map is None:
            return []
        index = self.index()
        stored = index.stats.get("leave_one_out")
        floors = asdict(self.config.verify)  # they decide which views count: measured again when they change
        if stored is None or (stored.get("views"), stored.get("max_side"), stored.get("floors")) != (
            views, max_side, floors
        ):
            start = time.perf_counter()
            records = self._leave_one_out(index, views, max_side)
            stored = {"views": views, "max_side": max_side, "floors": floors, "records": records}
            index.stats["leave_one_out"] = stored
            CONSOLE.print(
                f"Covariance self-check: {len(records)} of {min(views, index.training_views)} training views "
                f"localized without their own cells, {time.perf_counter() - start:.0f} s"
            )
            path = index_path(self.crossfire_map)
            if path is not None and path.is_file():
                try:
                    index.save(path)
                except OSError as err:
                    CONSOLE.print(f"[yellow]could not store the covariance self-check at {path} ({err}).")
        return [(float(d2), float(error)) for d2, error in stored["records"]]

    def _leave_one_out(self, index: MapIndex, views: int, max_side: int) -> List[List[float]]:
        num = index.training_views
        chosen = np.unique(np.linspace(0, num - 1, min(views, num)).round().astype(np.int64))
        records = []
        for view in track(chosen.tolist(), description="Covariance self-check", transient=True):
            made_from = {num + v for v, source in enumerate(index.virtual_sources) if source == view}
            kept = [without_cells(c) if v == view or v in made_from else c for v, c in enumerate(index.views)]
            fine = [without_cells(c) if v == view else c for v, c in enumerate(index.fine)]
            try:
                rgb = (self.crossfire_map.training_image(view)[..., :3].numpy() * 255.0).round().astype(np.uint8)
                K = self.crossfire_map.training_intrinsics(rgb.shape[1], rgb.shape[0], view)
                rgb, K = downscale_to(rgb, K, max_side)
                estimate = self.estimate(rgb, K, [index.c2ws[view]], replace(index, views=kept, fine=fine))
                if estimate.success and estimate.covariance is not None:
                    d2 = mahalanobis_squared(pose_error_vector(estimate.c2w, index.c2ws[view]), estimate.covariance)
                    if np.isfinite(d2):  # a singular covariance measures nothing
                        records.append([d2, float(estimate.reprojection_error_px)])
            except Exception as err:  # noqa: BLE001  a view that cannot be localized measures nothing
                CONSOLE.print(
                    f"[yellow]Covariance self-check: training view {view} skipped ({type(err).__name__}: {err})"
                )
        return records

    def extra_retrieval_views(self):
        """The map index's virtual views (their rendered colour and poses), which retrieval ranks beside the
        training views."""
        if self.crossfire_map is None:
            return None
        index = self.index()
        if not index.virtual_rgb:
            return None
        return index.virtual_rgb, index.virtual_c2ws


def without_cells(cells: ViewCells) -> ViewCells:
    """``cells`` with none of its cells (the same dtypes and widths)."""
    patch_points = None if cells.patch_points is None else cells.patch_points[:0]
    return ViewCells(cells.descriptors[:0], cells.points[:0], cells.pixels[:0], patch_points)


def diagnostics(found: IndexLocalization) -> Dict[str, Any]:
    """The figures behind ``found``'s estimate, by name, as the API answer and the calibration benchmark record them
    (the one place they are named)."""
    figures: Dict[str, Any] = {}
    refinement = found.refinement
    if refinement is None:  # no hypothesis: only the second pass's figures, if it ran
        return dict(found.figures)
    hypothesis, last = refinement.hypothesis, refinement.last
    figures.update(
        views_tried=len(found.coarse.tried), hypotheses_refined=refinement.num_trials,
        coarse_inliers=hypothesis.pnp.num_inliers, coarse_matches=hypothesis.num_matches,
        coarse_ratio=hypothesis.pnp.num_inliers / max(1, hypothesis.num_matches),
        refine_inliers=last.pnp.num_inliers, refine_matches=last.num_matches, refine_projected=last.num_projected,
        refine_ratio=last.ratio, refine_coverage=last.coverage, view_disagreement_deg=last.view_disagreement_deg,
        refine_rounds=len(refinement.rounds), centre_sigma=last.centre_sigma / found.extent,
        depth_centre_sigma=last.centre_sigma / last.inlier_depth,
    )  # fmt: skip
    fine = refinement.fine
    if fine is not None:
        figures.update(
            fine_inliers=fine.pnp.num_inliers, fine_matches=fine.num_matches, fine_projected=fine.num_projected
        )
        if fine.pnp.success:
            figures["fine_rotation_deg"] = rotation_angle_deg(fine.c2w[:3, :3].T @ last.c2w[:3, :3])
    patches = found.patches
    if patches is not None and patches.last is not None:
        patch = patches.last
        figures.update(
            patch_inliers=patch.pnp.num_inliers, patch_matches=patch.num_matches, patch_searched=patch.num_searched
        )
        if patches.failed is not None:
            figures["patch_failed"] = patches.failed
        else:
            figures["patch_rotation_deg"] = patches.rotation_deg
    figures.update(found.figures)
    return figures
