"""Localization as a library call: a loaded map, the queries, the priors and a matcher config in; results out.

Nothing is written here (``outputs`` writes, ``folder`` runs the whole ns-localize step). One query failing
(unreadable file, too few matches, an exception anywhere in its steps) is recorded and the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.io.queries import QueryImage, QueryImageError, downscale_to, read_query_image, undistort_if_needed
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.matchers import MatcherConfig, PoseEstimate
from crossfire_ns.localize.priors import PriorKind, RetrievalScore, priors_for, retrieval_index
from crossfire_ns.map import CrossfireMap
from crossfire_ns.results import QueryResult


@dataclass
class IntrinsicsFlags:
    """Intrinsics for queries that come without any (pixels; nerfstudio convention, pixel centres at +0.5)."""

    fx: float
    fy: Optional[float] = None
    """Defaults to fx."""
    cx: Optional[float] = None
    """Defaults to width / 2."""
    cy: Optional[float] = None
    """Defaults to height / 2."""

    def matrix(self, width: int, height: int) -> np.ndarray:
        fy = self.fy if self.fy is not None else self.fx
        cx = self.cx if self.cx is not None else width / 2
        cy = self.cy if self.cy is not None else height / 2
        return np.array([[self.fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def progress_bar(console: Optional[Console] = None) -> Progress:
    """rich progress bar with count, elapsed and remaining time."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


MAX_IMAGE_SIDE = 1024
"""Default cap on a query's longer side (pixels): larger queries are downscaled, their intrinsics with them."""

ASPECT_TOLERANCE = 0.01
"""A query this much (relative) off the training camera's aspect ratio cannot borrow its intrinsics."""


def default_intrinsics(crossfire_map: CrossfireMap, width: int, height: int) -> np.ndarray:
    """The training camera's K scaled to a ``width`` x ``height`` query; ``QueryImageError`` when the aspect ratio
    differs (scaling would give anisotropic focal lengths that the query's camera does not have)."""
    cams = crossfire_map.train_cameras
    train_w, train_h = int(cams.width[0]), int(cams.height[0])
    if abs((width / height) / (train_w / train_h) - 1.0) > ASPECT_TOLERANCE:
        raise QueryImageError(
            f"image is {width}x{height} (aspect {width / height:.3f}) but the training camera is {train_w}x{train_h} "
            f"(aspect {train_w / train_h:.3f}), so its intrinsics do not apply. Give this query's intrinsics in a "
            f"transforms.json beside it (fl_x, fl_y, cx, cy, w, h) or with --fx/--fy/--cx/--cy."
        )
    return crossfire_map.training_intrinsics(width, height)


def localize_queries(
    crossfire_map: CrossfireMap,
    queries: Sequence[QueryImage],
    matcher: Optional[MatcherConfig] = None,
    prior: PriorKind = "retrieval",
    retrieval: RetrievalScore = "matches",
    prior_poses: Optional[Mapping[str, np.ndarray]] = None,
    intrinsics: Optional[IntrinsicsFlags] = None,
    max_image_side: int = MAX_IMAGE_SIDE,
    retrieval_min_similarity: float = 0.6,
    localizer: Optional[Localizer] = None,
    on_result: Optional[Callable[[QueryResult], None]] = None,
    console: Optional[Console] = None,
) -> List[QueryResult]:
    """One ``QueryResult`` per query, in order; poses in the data's original frame.

    ``prior_poses``: ``file_path`` -> prior camera-to-world in the original frame (``prior="poses"``). ``intrinsics``
    replace every query's (distortion included); otherwise queries without intrinsics get the training camera's
    (recorded on the ``QueryImage``). Queries larger than ``max_image_side`` are downscaled for localization.
    ``localizer`` reuses a built one (else one is built from ``matcher``); ``on_result`` is called as each query
    finishes. Every step of a query runs inside one guard: its failure is its result, never the run's end.
    """
    console = console or CONSOLE
    localizer = localizer if localizer is not None else Localizer(crossfire_map.model, matcher)
    index = None
    if prior in ("retrieval", "sequential"):
        index = retrieval_index(crossfire_map, retrieval, retrieval_min_similarity)
    normalized_poses = {k: crossfire_map.to_normalized(v) for k, v in (prior_poses or {}).items()}
    results: List[QueryResult] = []
    previous = None
    warned = False
    with progress_bar(console) as progress:
        task = progress.add_task("Localizing", total=len(queries))
        for query in queries:
            start = time.perf_counter()
            try:
                image = read_query_image(query)
                if intrinsics is not None:
                    query.K, query.dist_coeffs, query.camera_model = (
                        intrinsics.matrix(*image.shape[1::-1]),
                        None,
                        "PINHOLE",
                    )
                elif query.K is None:
                    query.K = default_intrinsics(crossfire_map, image.shape[1], image.shape[0])
                    if not warned:
                        console.print("[yellow]warning: queries without intrinsics use the training camera.")
                        warned = True
                query.width, query.height = image.shape[1], image.shape[0]
            except QueryImageError as err:
                message = str(err) if str(query.path) in str(err) else f"{query.path}: {err}"
                console.print(f"[red]{message}")
                result = QueryResult(query.file_path, "unreadable", message=message, has_gt=query.has_gt)
            else:
                result, estimate = _localize_one(
                    crossfire_map,
                    localizer,
                    query,
                    image,
                    prior,
                    index,
                    normalized_poses,
                    previous,
                    max_image_side,
                    console,
                )
                result.seconds = time.perf_counter() - start
                if estimate is not None and estimate.success:
                    previous = estimate.c2w
            results.append(result)
            if on_result is not None:
                on_result(result)
            progress.advance(task)
    return results


def _localize_one(
    crossfire_map, localizer, query, image, prior, index, poses, previous, max_image_side, console
) -> Tuple[QueryResult, Optional[PoseEstimate]]:
    """Every step of one query inside one guard: undistortion, downscaling, priors, matching and PnP."""
    result = QueryResult(query.file_path, "failed", has_gt=query.has_gt)
    try:
        image = undistort_if_needed(image, query.K, query.dist_coeffs, fisheye=query.fisheye)
        image, K = downscale_to(image, query.K, max_image_side)
        priors = priors_for(prior, query.file_path, image, localizer.config.num_priors, index, poses, previous)
        if not priors:
            result.message = "no prior for this query (--prior poses: is it in the poses file?)"
            return result, None
        estimate = localizer.estimate(image, K, priors)
    except Exception as err:  # noqa: BLE001  one query's failure must not end the run
        result.message = f"{type(err).__name__}: {err}"
        console.print(f"[red]{query.file_path}: localization failed with {result.message}")
        return result, None
    result.message, result.num_matches, result.num_renders = (
        estimate.message,
        estimate.num_matches,
        estimate.num_renders,
    )
    if estimate.success:
        result.status, result.num_inliers = "localized", estimate.num_inliers
        result.reprojection_error_px = estimate.reprojection_error_px
        result.c2w = crossfire_map.to_original(estimate.c2w)
        if query.c2w_gt is not None:
            result.t_err, result.r_err = c2w_pose_errors(result.c2w, query.c2w_gt)
    return result, estimate
