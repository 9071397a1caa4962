"""Aggregate localization metrics over a query set."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from crossfire_ns.results import QueryResult


def _stat(values: List[float], fn) -> Optional[float]:
    return float(fn(values)) if values else None


def summarize(
    results: Iterable[Union[QueryResult, Mapping[str, Any]]],
    thresholds: Sequence[Tuple[float, float]] = (),
) -> Dict[str, Any]:
    """Counts, error statistics, recalls and timings of a run; JSON-ready (undefined values are None).

    * Error medians/means are over localized queries with ground truth (how accurate the poses we give are).
    * Recall at ``(translation, rotation_deg)`` is over all queries with ground truth, failed and unreadable
      ones counting as misses (how often we give a good pose). Thresholds are in the ground truth's units, so
      the caller scales them to the scene. Both bounds are inclusive.
    * Seconds are over queries that were attempted (not unreadable).
    """
    items = [QueryResult.from_any(r) for r in results]
    localized = [r for r in items if r.status == "localized"]
    with_gt = [r for r in items if r.has_gt or r.t_err is not None]
    evaluated = [r for r in localized if r.t_err is not None and r.r_err is not None]
    t_errs = [float(r.t_err) for r in evaluated]
    r_errs = [float(r.r_err) for r in evaluated]
    seconds = [float(r.seconds) for r in items if r.status != "unreadable"]

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
        "recall": recalls,
        "median_seconds": _stat(seconds, np.median),
        "mean_seconds": _stat(seconds, np.mean),
    }


def camera_extent(c2w: np.ndarray) -> float:
    """Diagonal of the bounding box of the camera centres of (N, 3|4, 4) poses: the size recall thresholds scale with."""
    centres = np.asarray(c2w, dtype=np.float64)[:, :3, 3]
    return float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) or 1.0
