"""Verification stage: whether the map confirms a pose, from typed evidence, with the floor that decided.

A wrong pose reported as localized is worse than an honest failure: a pose is confirmed only when the last
refinement round explains enough of its matches, enough of the map's cells that project into the query find a match,
the inliers of the pose reported (the patch rounds' when they held) hold the camera centre tightly (counted wider, as
the pose covariance is, for a query that reprojects poorly), the fitted views' cells agree with the query where the
pose puts them clearly better than a few pixels off, and a pose found among the further retrieved views also holds its
first patch round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, List, Literal, Mapping

import numpy as np
import torch

from crossfire_ns.localize.map_index import MapIndex
from crossfire_ns.localize.matching import guided_matches
from crossfire_ns.localize.pnp import QUERY_SHARE, CovarianceWidening
from crossfire_ns.localize.query_features import QueryFeatures
from crossfire_ns.localize.refine import RefineConfig, projected_cells, refinement_views, stacked_cells

Status = Literal["confirmed", "doubted", "failed"]


@dataclass
class VerifyConfig:
    """The confidence floors; a pose that misses one is reported as failed."""

    min_confidence: float = 0.6
    """Share of the last round's matches the pose must explain."""
    min_coverage: float = 0.16
    """Share of the map cells projected into the query that must find a match."""
    max_centre_sigma: float = 0.01
    """Camera-centre uncertainty allowed, as a share of the camera extent (inf: off)."""
    centre_from_patches: bool = True
    """Judge the camera centre by the patch rounds' inliers when they held (the pose reported is theirs, and their
    patches lie closer than the refinement's CNN matches); else by the last refinement round's."""
    patch_noise_px: float = 0.35
    """Pixel noise at least assumed of the patches' inliers when judging the centre by them: their residuals do not
    show the error the map's depth shares between them."""
    widen_centre: bool = True
    """Judge the camera centre by the covariance widened for the query (``pnp.QUERY_SHARE``) beyond a sharp query's: a
    blurred or dark query's shared errors move the centre more than its inliers say."""
    min_contrast: float = 0.25
    """How much better the cells must agree where the pose puts them than shifted (-inf: off)."""
    second_pass_needs_patches: bool = True
    """A pose found among the further retrieved views must also hold the first patch round: more hypotheses were tried
    for it, so more wrong ones could pass the other floors by chance."""
    report_unconfirmed: bool = False
    """Report doubted poses as localized (calibration; they still go on to further views)."""
    diagnostic_figures: bool = False
    """Also record the figures no floor reads (per-view disagreement, held-out views)."""

    def without_floors(self) -> "VerifyConfig":
        """These settings with every floor switched off."""
        return replace(
            self, min_confidence=0.0, min_coverage=0.0, max_centre_sigma=float("inf"), min_contrast=float("-inf"),
            second_pass_needs_patches=False,
        )  # fmt: skip


@dataclass(frozen=True)
class Evidence:
    """The figures the floors read, all of them required. ``centre_sigma`` and ``contrast`` are NaN when they cannot
    be computed at the pose (no cell of the fitted views projects into the query): that check then rejects nothing,
    and the verdict says so."""

    confidence: float
    """The share of the last refinement round's matches within its inlier threshold."""
    coverage: float
    """The share of that round's projected cells that found a match."""
    centre_sigma: float
    """Camera-centre uncertainty as a share of the map's camera extent, from the last refinement round's inliers."""
    contrast: float
    """``cell_contrast`` of the fitted views' cells at the pose."""
    centre_widening: float = 1.0
    """How much wider the centre's stated uncertainty is than a sharp query's (``centre_widening``; 1 when sharp)."""
    second_pass: bool = False
    """Found among the further retrieved views, after the first ones gave no confirmed pose."""
    patches_held: bool = True
    """The first patch round found its share of the query's patches at the pose (True when no patch round ran)."""
    patch_centre_sigma: float = float("nan")
    """The same from the last patch round's inliers (``VerifyConfig.patch_noise_px``) when every patch round held;
    NaN otherwise."""

    def __post_init__(self) -> None:
        for name in ("confidence", "coverage"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Evidence.{name} must be a number, got {getattr(self, name)}")

    @classmethod
    def from_figures(cls, figures: Mapping[str, Any]) -> "Evidence":
        """From recorded figures (``diagnostics``: refine_ratio, refine_coverage, centre_sigma, refine_contrast,
        centre_widening, second_pass, patches_held, and patch_centre_sigma where the patch rounds held); a missing one
        is a KeyError naming it, never a floor switched off (a missing patch_centre_sigma: the patch rounds' pose was
        not taken)."""
        names = {"confidence": "refine_ratio", "coverage": "refine_coverage"}
        names.update(centre_sigma="centre_sigma", contrast="refine_contrast", centre_widening="centre_widening")
        names.update(second_pass="second_pass", patches_held="patches_held")
        missing = [recorded for recorded in names.values() if recorded not in figures]
        if missing:
            raise KeyError(f"the figures lack {', '.join(missing)}: the floors cannot judge the pose")
        values = {name: float(figures[recorded]) for name, recorded in names.items()}
        values["patch_centre_sigma"] = float(figures.get("patch_centre_sigma", float("nan")))
        return cls(**values | {name: bool(values[name]) for name in ("second_pass", "patches_held")})

    def judged_centre_sigma(self, config: "VerifyConfig") -> float:
        """The centre uncertainty the floor reads under ``config``: the patch rounds' where they held and
        ``centre_from_patches``, else the refinement's; widened for the query when ``widen_centre``."""
        patches = config.centre_from_patches and math.isfinite(self.patch_centre_sigma)
        sigma = self.patch_centre_sigma if patches else self.centre_sigma
        return sigma * (self.centre_widening if config.widen_centre else 1.0)


@dataclass(frozen=True)
class Verdict:
    """What the map says of a pose."""

    status: Status
    floors: tuple = ()
    """The floors that doubt the pose, each as "name value, limit" (empty when confirmed)."""
    unchecked: tuple = ()
    """Checks that could not run (their figure is NaN)."""

    @property
    def confirmed(self) -> bool:
        return self.status == "confirmed"

    @property
    def reason(self) -> str:
        """The floors that doubt the pose, for the message a user sees."""
        return "; ".join(self.floors)


def verdict(evidence: Evidence, config: VerifyConfig) -> Verdict:
    """Confirmed, or doubted with every floor that doubts the pose (the one decision, for ns-localize and for the
    calibration benchmark alike)."""
    doubts: List[str] = []
    unchecked = tuple(n for n in ("centre_sigma", "contrast") if math.isnan(getattr(evidence, n)))
    if evidence.confidence < config.min_confidence:
        doubts.append(f"confidence {evidence.confidence:.2f}, min {config.min_confidence:.2f}")
    if evidence.coverage < config.min_coverage:
        doubts.append(f"coverage {evidence.coverage:.2f}, min {config.min_coverage:.2f}")
    centre_sigma = evidence.judged_centre_sigma(config)
    if centre_sigma > config.max_centre_sigma:
        doubts.append(f"camera centre within {centre_sigma:.3f} of the map's extent, max {config.max_centre_sigma:.3f}")
    if evidence.contrast < config.min_contrast:
        doubts.append(f"contrast {evidence.contrast:.2f}, min {config.min_contrast:.2f}")
    if config.second_pass_needs_patches and evidence.second_pass and not evidence.patches_held:
        doubts.append("found among further views, and the first patch round did not hold")
    return Verdict("doubted" if doubts else "confirmed", tuple(doubts), unchecked)


def centre_widening(reprojection_error_px: float, widening: CovarianceWidening = QUERY_SHARE) -> float:
    """How much wider than a sharp query's ``widening`` states a pose's centre uncertainty, from its inliers' mean
    reprojection error: the root of the factor over its value at the knee, at least 1 (a sharp query's centre is judged
    as first order states it)."""
    return math.sqrt(max(1.0, widening.factor(reprojection_error_px) / widening.factor(widening.knee_px)))


FAILED = Verdict("failed")
"""The verdict of a query for which no pose was found."""


# ---------------------------------------------------------------------------------------------- contrast


def four_shifts(shift: int):
    """(dy, dx) of the four misalignments a contrast compares against: ``shift`` pixels right, left, down, up."""
    return ((0, shift), (0, -shift), (shift, 0), (-shift, 0))


def gain(aligned: float, shifted: float) -> float:
    """The contrast of an alignment: how much of what was left to gain over ``shifted`` similarity ``aligned`` wins."""
    return (aligned - shifted) / max(1e-6, 1.0 - shifted)


def shift_contrast(query: torch.Tensor, rendered: torch.Tensor, valid: torch.Tensor, aligned: float, shift: int):
    """How much better a render agrees with the query where the pose puts it than ``shift`` pixels off:
    ``gain(aligned, shifted)``, shifted the mean of four shifts' median similarity. ``query``, ``rendered``: (D, h, w)
    unit features; ``valid``: (h, w) bool. NaN when no shift overlaps."""
    height, width = valid.shape
    if height <= shift or width <= shift:
        return float("nan")
    medians = []
    for dy, dx in four_shifts(shift):
        rows_q, rows_r = slice(max(0, dy), height + min(0, dy)), slice(max(0, -dy), height + min(0, -dy))
        cols_q, cols_r = slice(max(0, dx), width + min(0, dx)), slice(max(0, -dx), width + min(0, -dx))
        both = valid[rows_q, cols_q] & valid[rows_r, cols_r]
        if bool(both.any()):
            sim = (query[:, rows_q, cols_q] * rendered[:, rows_r, cols_r]).sum(0)[both]
            medians.append(float(sim.median()))
    if not medians:
        return float("nan")
    return gain(aligned, float(np.mean(medians)))


def index_contrast(descriptors: torch.Tensor, pixels: np.ndarray, feature_map: torch.Tensor, shift: int) -> float:
    """``shift_contrast`` without a render: cells' (N, D) descriptors against the query's ``feature_map`` (D, H, W)
    where the pose projects them (``pixels`` (N, 2), centres at +0.5) and ``shift`` pixels off."""
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

    shifted = [median_similarity(dy, dx) for dy, dx in four_shifts(shift)]
    if all(np.isnan(shifted)):
        return float("nan")
    return gain(median_similarity(0, 0), float(np.nanmean(shifted)))


def cell_contrast(points: np.ndarray, descriptors: torch.Tensor, query: QueryFeatures, K, c2w: np.ndarray) -> float:
    """``index_contrast`` of cells ((N, 3) points, (N, D) descriptors) at ``c2w``, shifted by a twentieth of the
    query's width; NaN when none projects into the query."""
    pixels, keep = projected_cells(points, c2w, K, query.shape, margin=1.0)
    if len(keep) == 0:
        return float("nan")
    shift = max(2, round(query.shape[1] / 20))
    chosen = descriptors[torch.from_numpy(keep).to(descriptors.device)]
    return index_contrast(chosen, pixels[keep], query.feature_map, shift)


def fitted_contrast(index: MapIndex, query: QueryFeatures, K, c2w: np.ndarray, views_config: RefineConfig) -> float:
    """``cell_contrast`` of the cells of the refinement views at ``c2w`` (the views the pose was fitted to)."""
    views = refinement_views(index, c2w, K, query.shape, views_config)
    return cell_contrast(*stacked_cells(index.views, views, placed=views_config.placed_points), query, K, c2w)


def held_out_agreement(
    index: MapIndex,
    query: QueryFeatures,
    K,
    c2w: np.ndarray,
    radius: float,
    views_config: RefineConfig,
    min_similarity: float,
) -> dict:
    """How the views just beyond those the pose was fitted to see the query at ``c2w``: the share of their projected
    cells that find a distinct match within ``radius`` (``holdout_coverage``), the share of those within the
    refinement's inlier threshold (``holdout_ratio``) and their ``holdout_contrast``; {} when there are none."""
    n = views_config.views
    views = refinement_views(index, c2w, K, query.shape, views_config, 2 * n)[n:]
    if not views:
        return {}
    points, descriptors = stacked_cells(index.views, views)
    pixels, keep = projected_cells(points, c2w, K, query.shape, margin=radius + 1)
    if len(keep) == 0:
        return {"holdout_coverage": 0.0, "holdout_ratio": 0.0}
    device = query.device
    expected = torch.from_numpy(pixels[keep]).float().to(device)
    chosen = descriptors[torch.from_numpy(keep).to(descriptors.device)].to(device)
    found, xy, _ = guided_matches(chosen, expected, query.feature_map, int(np.ceil(radius)), min_similarity)
    error = (xy - expected[found]).norm(dim=1)
    threshold = views_config.reprojection_threshold_px
    within = float((error <= threshold).float().mean()) if len(found) else 0.0
    return {
        "holdout_coverage": len(found) / len(keep),
        "holdout_ratio": within,
        "holdout_contrast": cell_contrast(points, descriptors, query, K, c2w),
    }
