"""Aggregate localization metrics over a query set."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from crossfire_ns.results import QueryResult

STAGES = ("retrieval", "coarse", "refine")
"""Stages whose seconds a QueryResult carries (``seconds_<stage>``); ``other`` is the total minus them."""

INFINITE = "inf"
"""How an infinite median (more than half the queries not localized) is written in a summary: JSON has no
infinity, and None already means "no query had ground truth"."""

WRONG_ROTATION_DEG = 5.0
"""A localized query more than this many degrees off is "confidently wrong" (without recall thresholds)."""


def _stat(values: List[float], fn) -> Optional[float]:
    return float(fn(values)) if values else None


def _median_or_inf(values: List[float]) -> Union[float, str, None]:
    """Median with infinities allowed (hloc's convention for failures); infinite -> ``INFINITE``."""
    if not values:
        return None
    median = float(np.median(values))
    return median if np.isfinite(median) else INFINITE


def _stage_seconds(result: QueryResult) -> Dict[str, float]:
    """Seconds per stage of one query, ``other`` = total minus the stages (never negative). Read with getattr,
    default 0, so results of a localizer without stage timing (or the peer) have all their time in ``other``."""
    stages = {stage: float(getattr(result, f"seconds_{stage}", 0.0) or 0.0) for stage in STAGES}
    stages["other"] = max(float(result.seconds) - sum(stages.values()), 0.0)
    return stages


def summarize(
    results: Iterable[Union[QueryResult, Mapping[str, Any]]],
    thresholds: Sequence[Tuple[float, float]] = (),
    wrong_threshold: Optional[Tuple[float, float]] = None,
) -> Dict[str, Any]:
    """Counts, error statistics, recalls and timings of a run; JSON-ready (undefined values are None).

    * Error medians/means are over localized queries with ground truth (how accurate the poses we give are).
    * ``median_translation_error_all`` / ``median_rotation_error_deg_all``: medians over *all* queries with
      ground truth, failed and unreadable ones counted as infinitely wrong (hloc's convention); the string
      ``"inf"`` (``INFINITE``) when half or more were not localized, None without ground truth.
    * Recall at ``(translation, rotation_deg)`` is over all queries with ground truth, failed and unreadable
      ones counting as misses (how often we give a good pose). Thresholds are in the ground truth's units, so
      the caller scales them to the scene. Both bounds are inclusive.
    * ``confidently_wrong`` (share of the queries with ground truth) and ``num_confidently_wrong``: queries
      reported localized but further off than ``wrong_threshold`` = (translation, rotation_deg), in either.
      By default that is the loosest recall threshold (the one with the largest rotation: (5% of the scene
      extent, 5 deg) for ns-localize's and the benchmark's thresholds, scaled as they are), or 5 deg alone
      without thresholds.
    * Seconds are over queries that were attempted (not unreadable), in total (``median_seconds``) and per
      stage (``median_seconds_retrieval``, ``_coarse``, ``_refine``, ``_other`` = the rest), with
      ``median_renders`` (map renders per query).
    """
    items = [QueryResult.from_any(r) for r in results]
    localized = [r for r in items if r.status == "localized"]
    with_gt = [r for r in items if r.has_gt or r.t_err is not None]
    evaluated = [r for r in localized if r.t_err is not None and r.r_err is not None]
    t_errs = [float(r.t_err) for r in evaluated]
    r_errs = [float(r.r_err) for r in evaluated]
    attempted = [r for r in items if r.status != "unreadable"]
    seconds = [float(r.seconds) for r in attempted]
    stage_seconds = [_stage_seconds(r) for r in attempted]
    good = {id(r) for r in evaluated}  # by identity: results hold arrays, so == is not a plain bool
    t_all = [float(r.t_err) if id(r) in good else np.inf for r in with_gt]
    r_all = [float(r.r_err) if id(r) in good else np.inf for r in with_gt]
    if wrong_threshold is None:
        loosest = max(thresholds, key=lambda t: t[1]) if thresholds else (np.inf, WRONG_ROTATION_DEG)
        wrong_threshold = (float(loosest[0]), float(loosest[1]))
    wrong = sum(1 for r in evaluated if r.t_err > wrong_threshold[0] or r.r_err > wrong_threshold[1])

    recalls = []
    for t_thr, r_thr in thresholds:
        hits = sum(1 for r in evaluated if r.t_err <= t_thr and r.r_err <= r_thr)
        recalls.append(
            {
                "translation": float(t_thr),
                "rotation_deg": float(r_thr),
                "recall": hits / len(with_gt) if with_gt else None,
                "hits": hits,
            }
        )

    return {
        "num_queries": len(items),
        "num_localized": len(localized),
        "num_failed": sum(1 for r in items if r.status == "failed"),
        "num_unreadable": sum(1 for r in items if r.status == "unreadable"),
        "num_with_gt": len(with_gt),
        "num_evaluated": len(evaluated),
        "median_translation_error": _stat(t_errs, np.median),
        "mean_translation_error": _stat(t_errs, np.mean),
        "median_rotation_error_deg": _stat(r_errs, np.median),
        "mean_rotation_error_deg": _stat(r_errs, np.mean),
        "median_translation_error_all": _median_or_inf(t_all),
        "median_rotation_error_deg_all": _median_or_inf(r_all),
        "recall": recalls,
        "confidently_wrong": wrong / len(with_gt) if with_gt else None,
        "num_confidently_wrong": wrong,
        "confidently_wrong_threshold": {
            "translation": None if not np.isfinite(wrong_threshold[0]) else wrong_threshold[0],
            "rotation_deg": wrong_threshold[1],
        },
        "median_seconds": _stat(seconds, np.median),
        "mean_seconds": _stat(seconds, np.mean),
        **{f"median_seconds_{k}": _stat([s[k] for s in stage_seconds], np.median) for k in (*STAGES, "other")},
        "median_renders": _stat([float(getattr(r, "num_renders", 0) or 0) for r in attempted], np.median),
    }


def camera_extent(c2w: np.ndarray) -> float:
    """Diagonal of the bounding box of the camera centres of (N, 3|4, 4) poses: the size recall thresholds scale with."""
    centres = np.asarray(c2w, dtype=np.float64)[:, :3, 3]
    return float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) or 1.0
