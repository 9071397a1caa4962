"""The ns-localize step, in the manner of hloc's steps: a folder of queries against a loaded map, outputs written.

``read_inputs`` reads and checks everything that can be wrong with the inputs before a map is loaded (seconds on
a CPU); ``localize_folder`` localizes (``run.localize_queries``), evaluates against ground truth where there is
some, and writes the outputs (``outputs``). ns-localize and the benchmarks both call these two with their map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nerfstudio.utils.rich_utils import CONSOLE
from rich.console import Console

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.io.queries import QueryImage, QueryInputError, load_query_set, read_query_image
from crossfire_ns.io.transforms import read_poses_json
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.matchers import CrossfireMatcherConfig, MatcherConfig, matcher_name
from crossfire_ns.localize.outputs import OUTPUT_FILES, print_results_table, write_outputs, write_overlay
from crossfire_ns.localize.priors import PriorKind, RetrievalScore
from crossfire_ns.localize.run import IntrinsicsFlags, localize_queries
from crossfire_ns.map import CrossfireMap
from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult

DEFAULT_RECALL_THRESHOLDS: Tuple[Tuple[float, float], ...] = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))
"""(fraction of the scene extent, degrees)."""


class LocalizeError(CrossfireInputError):
    """A problem with ns-localize's inputs that stops the whole run (the message says how to fix it)."""


@dataclass
class FolderInputs:
    """A query folder read and checked: the queries and, for ``--prior poses``, their priors."""

    query_dir: Path
    queries: List[QueryImage]
    prior_poses: Dict[str, Any] = field(default_factory=dict)
    """file_path -> 4x4 prior camera-to-world, original frame."""


def read_inputs(
    query_dir: Path,
    prior: PriorKind = "retrieval",
    poses_file: Optional[Path] = None,
    max_queries: Optional[int] = None,
    console: Optional[Console] = None,
) -> FolderInputs:
    """The queries of ``query_dir`` (the first ``max_queries``) and the priors of ``poses_file``; warnings printed.

    Raises ``LocalizeError`` (a ``CrossfireInputError``) naming the file and the fix."""
    console = console or CONSOLE
    if prior == "poses" and poses_file is None:
        raise LocalizeError(
            "--prior poses needs --poses-file (a transforms.json with a transform_matrix per file_path)."
        )
    try:
        queries, warnings = load_query_set(query_dir)
    except QueryInputError as err:
        raise LocalizeError(str(err)) from err
    poses = {}
    if poses_file is not None:
        try:
            poses = read_poses_json(poses_file)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LocalizeError(
                f"{poses_file}: cannot read prior poses ({err}); give a transforms.json with frames[].transform_matrix."
            ) from err
    for warning in warnings:
        console.print(f"[yellow]warning: {warning}")
    if max_queries is not None:
        queries = queries[:max_queries]
    return FolderInputs(Path(query_dir), queries, poses)


def evaluate(
    results: Sequence[QueryResult],
    scene_extent: float,
    recall_thresholds: Sequence[Tuple[float, float]] = DEFAULT_RECALL_THRESHOLDS,
) -> Tuple[Dict[str, Any], List[Tuple[float, float]]]:
    """(summary, absolute thresholds): ``metrics.summarize`` at thresholds scaled to the scene extent."""
    thresholds = [(fraction * scene_extent, degrees) for fraction, degrees in recall_thresholds]
    summary = summarize(results, thresholds)
    summary.update(
        {
            "scene_extent": scene_extent,
            "recall_thresholds_relative": [list(t) for t in recall_thresholds],
            "renders": int(sum(r.num_renders for r in results)),
        }
    )
    return summary, thresholds


def localize_folder(
    crossfire_map: CrossfireMap,
    inputs: FolderInputs,
    output_dir: Path,
    matcher: Optional[MatcherConfig] = None,
    prior: PriorKind = "retrieval",
    retrieval: RetrievalScore = "matches",
    intrinsics: Optional[IntrinsicsFlags] = None,
    scene_extent: Optional[float] = None,
    recall_thresholds: Sequence[Tuple[float, float]] = DEFAULT_RECALL_THRESHOLDS,
    overlays: bool = False,
    console: Optional[Console] = None,
) -> Dict[str, Any]:
    """Localize ``inputs`` against the map, write poses.json, results.csv, summary.json, errors.png (and overlays/)
    into ``output_dir``; returns the summary. ``scene_extent`` (original units) defaults to the training cameras'."""
    console = console or CONSOLE
    matcher = matcher if matcher is not None else CrossfireMatcherConfig()
    localizer = Localizer(crossfire_map.model, matcher)
    results = localize_queries(
        crossfire_map,
        inputs.queries,
        prior=prior,
        retrieval=retrieval,
        prior_poses=inputs.prior_poses,
        intrinsics=intrinsics,
        localizer=localizer,
        console=console,
    )
    summary, thresholds = evaluate(results, scene_extent or crossfire_map.camera_extent(), recall_thresholds)
    summary.update({"matcher": matcher_name(matcher), "prior": prior, "config": str(crossfire_map.config_path)})
    metadata = {"matcher": matcher_name(matcher), "query_dir": str(inputs.query_dir.resolve())}
    write_outputs(output_dir, results, inputs.queries, summary, thresholds, metadata)
    print_results_table(results, summary, console=console)
    if overlays:
        write_overlays(Path(output_dir) / "overlays", results, inputs.queries, localizer, crossfire_map)
    console.print(f"Outputs in {output_dir}/: {', '.join(OUTPUT_FILES)}")
    return summary


def write_overlays(folder: Path, results, queries, localizer: Localizer, crossfire_map: CrossfireMap) -> None:
    """overlays/<query>.png: each localized query beside the map rendered at its estimate."""
    by_path = {q.file_path: q for q in queries}
    for result in results:
        query = by_path[result.file_path]
        if result.c2w is None:
            continue
        image = read_query_image(query)
        height, width = image.shape[:2]
        view = localizer.renderer.render(crossfire_map.to_normalized(result.c2w), query.K, width, height)
        render = (view.rgb.clamp(0, 1) * 255).byte().cpu().numpy()
        write_overlay(folder / Path(result.file_path).with_suffix(".png").name, image, render)
