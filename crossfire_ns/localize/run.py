"""Localization as a library call: a loaded map, the queries, the priors and a matcher config in; results out.

Nothing is written here (``outputs`` writes, ``folder`` runs the whole ns-localize step). One query failing
(unreadable file, too few matches, an exception anywhere in its steps) is recorded and the others go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.io.queries import QueryImage, QueryImageError, read_query_image
from crossfire_ns.localize.api import MAX_IMAGE_SIDE, Localization, MapLocalizer
from crossfire_ns.localize.matchers import MatcherConfig
from crossfire_ns.localize.priors import PriorKind, RetrievalScore
from crossfire_ns.map import CrossfireMap
from crossfire_ns.results import QueryResult


@dataclass
class IntrinsicsFlags:
    """Intrinsics given on the command line for every query (pixels; nerfstudio convention, pixel centres at +0.5)."""

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


def localize_queries(
    crossfire_map: CrossfireMap,
    queries: Sequence[QueryImage],
    matcher: Optional[MatcherConfig] = None,
    prior: PriorKind = "retrieval",
    retrieval: RetrievalScore = "matches",
    prior_poses: Optional[Mapping[str, np.ndarray]] = None,
    intrinsics: Optional[IntrinsicsFlags] = None,
    max_image_side: int = MAX_IMAGE_SIDE,
    map_localizer: Optional[MapLocalizer] = None,
    on_result: Optional[Callable[[QueryResult], None]] = None,
    console: Optional[Console] = None,
) -> List[QueryResult]:
    """One ``QueryResult`` per query, in order; poses in the data's original frame.

    ``prior``: retrieval of training views, ``poses`` (``prior_poses``: ``file_path`` -> prior camera-to-world in the
    original frame) or ``sequential`` (the previous estimate; retrieval for the first query and after a failure).
    ``intrinsics`` replace every query's (distortion included); otherwise queries without intrinsics get the training
    camera's (recorded on the ``QueryImage``). Queries larger than ``max_image_side`` are downscaled. ``map_localizer``
    reuses a built one (else one is built from ``matcher``); ``on_result`` is called as each query finishes. Every step
    of a query runs inside one guard: its failure is its result, never the run's end.
    """
    console = console or CONSOLE
    if map_localizer is None:
        map_localizer = MapLocalizer(crossfire_map, matcher, retrieval=retrieval, max_image_side=max_image_side)
    map_localizer.warm_up()  # the retrieval index and the map index, built once, before the progress bar starts
    sequence = f"localize_queries-{id(queries)}" if prior == "sequential" else None
    results: List[QueryResult] = []
    warned = False
    with progress_bar(console) as progress:
        task = progress.add_task("Localizing", total=len(queries))
        for query in queries:
            start = time.perf_counter()
            result = QueryResult(query.file_path, "failed", has_gt=query.has_gt)
            try:
                image = read_query_image(query)
                if intrinsics is not None:
                    query.K = intrinsics.matrix(image.shape[1], image.shape[0])
                    query.dist_coeffs, query.camera_model = None, "PINHOLE"
                elif query.K is None:
                    query.K = map_localizer.training_intrinsics(image.shape[1], image.shape[0])
                    if not warned:
                        console.print("[yellow]warning: queries without intrinsics use the training camera.")
                        warned = True
                query.width, query.height = image.shape[1], image.shape[0]
            except QueryImageError as err:
                result.status = "unreadable"
                result.message = str(err) if str(query.path) in str(err) else f"{query.path}: {err}"
                console.print(f"[red]{result.message}")
            else:
                given = (prior_poses or {}).get(query.file_path) if prior == "poses" else None
                if prior == "poses" and given is None:
                    result.message = "no prior for this query (--prior poses: is it in the poses file?)"
                else:
                    answer = map_localizer.localize(
                        image,
                        query.K,
                        prior=given,
                        sequence=sequence,
                        dist_coeffs=query.dist_coeffs,
                        fisheye=query.fisheye,
                    )
                    _fill(result, answer, query)
                    if answer.crashed:
                        console.print(f"[red]{query.file_path}: localization failed with {answer.message}")
            result.seconds = time.perf_counter() - start
            results.append(result)
            if on_result is not None:
                on_result(result)
            progress.advance(task)
    if sequence is not None:
        map_localizer.end_sequence(sequence)
    return results


def _fill(result: QueryResult, answer: Localization, query: QueryImage) -> None:
    """Copy an answer into the query's result, scored against its ground truth when it has some."""
    result.status = answer.status
    result.message, result.num_matches, result.num_renders = answer.message, answer.num_matches, answer.num_renders
    result.seconds_retrieval, result.seconds_coarse = answer.seconds_retrieval, answer.seconds_coarse
    result.seconds_refine, result.confidence = answer.seconds_refine, answer.confidence
    if answer.localized:
        result.c2w, result.num_inliers = answer.c2w, answer.num_inliers
        result.reprojection_error_px = answer.reprojection_error_px
        result.covariance = answer.covariance
        if query.c2w_gt is not None:
            result.t_err, result.r_err = c2w_pose_errors(result.c2w, query.c2w_gt)
