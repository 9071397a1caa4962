"""The ns-localize step, in the manner of hloc's steps: a folder of queries against a loaded map, outputs written.

``read_inputs`` reads and checks everything that can be wrong with the inputs before a map is loaded (seconds on
a CPU); ``localize_folder`` localizes (``run.localize_queries``), evaluates against ground truth where there is
some, and writes the outputs (``outputs``). ns-localize and the benchmarks both call these two with their map.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nerfstudio.utils.rich_utils import CONSOLE
from rich.console import Console

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.io.atomic import csv_value, to_jsonable, write_csv_atomic, write_json_atomic
from crossfire_ns.io.pose_formats import read_hloc_poses
from crossfire_ns.io.queries import (
    TRANSFORMS_NAME,
    QueryImage,
    QueryInputError,
    downscale_to,
    load_query_set,
    read_query_image,
)
from crossfire_ns.io.transforms import read_poses_json, write_poses_json
from crossfire_ns.localize.api import MAX_IMAGE_SIDE, MapLocalizer
from crossfire_ns.localize.matchers import CrossfireMatcherConfig, MatcherConfig, matcher_name
from crossfire_ns.localize.outputs import (
    OUTPUT_FILES,
    RESULT_COLUMNS,
    print_results_table,
    write_outputs,
    write_overlay,
)
from crossfire_ns.localize.priors import PriorKind, RetrievalScore
from crossfire_ns.localize.run import IntrinsicsFlags, localize_queries
from crossfire_ns.map import CrossfireMap, checkpoint_sha256
from crossfire_ns.metrics import summarize
from crossfire_ns.results import QueryResult, read_results_csv

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
    beyond: List[QueryImage] = field(default_factory=list)
    """The query set's queries after the first ``max_queries``: not localized, but a resumed run keeps their results."""


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
    if max_queries is not None and max_queries < 0:
        raise LocalizeError(f"--max-queries must be 0 or more, got {max_queries}.")
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
            poses = read_hloc_poses(poses_file) if Path(poses_file).suffix == ".txt" else read_poses_json(poses_file)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LocalizeError(
                f"{poses_file}: cannot read prior poses ({err}); give a transforms.json with frames[].transform_matrix "
                f"or an hloc results file (.txt: name qw qx qy qz tx ty tz, world-to-camera)."
            ) from err
    for warning in warnings:
        console.print(f"[yellow]warning: {warning}")
    limit = len(queries) if max_queries is None else max_queries
    return FolderInputs(Path(query_dir), queries[:limit], poses, queries[limit:])


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


RUN_FILE = "run.json"
"""What run an output folder holds (map, queries, method and its settings): a rerun resumes only the same run."""

WRITE_EVERY = 5
"""poses.json and summary.json are rewritten after this many new queries (and at the end)."""


def prepare_output_dir(output_dir: Path, overwrite: bool = False) -> None:
    """Create ``output_dir`` and check it is writable, before any map is loaded; refuse a folder that holds another
    tool's or an unidentified run's results unless ``overwrite``."""
    out = Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise LocalizeError(f"{out}: cannot write the outputs there ({err}); pass a writable --output-dir.") from err
    if not overwrite and not (out / RUN_FILE).is_file() and any((out / name).exists() for name in OUTPUT_FILES):
        raise LocalizeError(
            f"{out}: holds localization results that are not from a resumable ns-localize run (no {RUN_FILE}); "
            f"pass --overwrite to replace them or choose another --output-dir."
        )


def run_identity(crossfire_map: CrossfireMap, inputs: FolderInputs, matcher: MatcherConfig, **settings: Any) -> dict:
    """What makes two runs the same run: the map and its checkpoint's content, the query folder and its
    transforms.json's content, the method and its settings (evaluation settings and the number of queries do not).
    Content, not names: a map retrained in place or an edited transforms.json is another run."""
    options = {k: v for k, v in dataclasses.asdict(matcher).items() if not k.startswith("_")}
    checkpoint = crossfire_map.checkpoint
    transforms = inputs.query_dir / TRANSFORMS_NAME
    return to_jsonable(
        {
            "map": str(Path(crossfire_map.config_path).resolve()) if crossfire_map.config_path else None,
            "checkpoint_sha256": None if checkpoint is None else checkpoint_sha256(checkpoint),
            "query_dir": str(inputs.query_dir.resolve()),
            "queries_sha256": hashlib.sha256(transforms.read_bytes()).hexdigest() if transforms.is_file() else None,
            "matcher": matcher_name(matcher),
            "matcher_options": options,
            **settings,
        }
    )


def _finished_results(out: Path, identity: dict, overwrite: bool, console: Console) -> Dict[str, QueryResult]:
    """The results a previous run of the same identity left in ``out`` (file_path -> result); refuses another run's.
    Only complete rows of results.csv count (``results.read_results_csv``): a row cut by a crash is done again."""
    run_file = out / RUN_FILE
    if overwrite or not run_file.is_file():
        return {}
    try:
        previous = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LocalizeError(f"{run_file}: unreadable ({err}); pass --overwrite to start afresh.") from err
    if previous != identity:
        differs = sorted(k for k in set(previous) | set(identity) if previous.get(k) != identity.get(k))
        raise LocalizeError(
            f"{out}: holds the results of a different run (it differs in {', '.join(differs)}); pass --overwrite "
            f"to replace them or choose another --output-dir."
        )
    csv_file = out / "results.csv"
    if not csv_file.is_file():
        return {}
    try:
        rows, broken = read_results_csv(csv_file)
    except OSError as err:
        raise LocalizeError(f"{csv_file}: unreadable ({err}); pass --overwrite to start afresh.") from err
    if broken:
        console.print(
            f"[yellow]{csv_file}: {broken} incomplete row(s) (cut short by a crash?) are not reused; "
            f"those queries are done again."
        )
    return {result.file_path: result for result in rows}


class _Progress:
    """Appends each finished query to results.csv and rewrites poses.json and summary.json every few queries.

    The results are this run's queries in the query set's order, then the previous results it keeps without
    redoing them (queries past ``max_queries``, or gone from the folder): finished work is never dropped."""

    def __init__(self, out: Path, inputs: FolderInputs, finished: Dict[str, QueryResult], write) -> None:
        self.out, self.inputs, self.write = out, inputs, write
        self.results = dict(finished)
        self.new = 0
        self.order = {q.file_path: i for i, q in enumerate([*inputs.queries, *inputs.beyond])}
        write_csv_atomic(out / "results.csv", [r.to_dict() for r in self.ordered()], fieldnames=RESULT_COLUMNS)
        self.handle = (out / "results.csv").open("a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.handle, fieldnames=RESULT_COLUMNS, extrasaction="ignore")

    def __call__(self, result: QueryResult) -> None:
        self.results[result.file_path] = result
        try:
            self.writer.writerow({k: csv_value(v) for k, v in result.to_dict().items()})
            self.handle.flush()
            os.fsync(self.handle.fileno())
        except OSError as err:
            raise _write_error(self.out / "results.csv", err) from err
        self.new += 1
        if self.new % WRITE_EVERY == 0:
            self.write(self.ordered(), final=False)

    def ordered(self) -> List[QueryResult]:
        """Every result, in the query set's order (results of queries no longer in it last, as they were)."""
        paths = sorted(self.results, key=lambda path: self.order.get(path, len(self.order)))
        return [self.results[path] for path in paths]

    def done(self) -> bool:
        """Whether every query of this run has a result."""
        return all(q.file_path in self.results for q in self.inputs.queries)

    def close(self) -> None:
        """Close results.csv; a flush that fails here (a full disk) loses only a row that was already reported."""
        with contextlib.suppress(OSError):
            self.handle.close()


def _write_error(path: Path, err: OSError) -> LocalizeError:
    """A failed write of the outputs (a full disk, a lost mount) as a message that says the finished work is kept."""
    return LocalizeError(
        f"{path}: cannot write ({err}). The queries finished so far are kept in results.csv (a row the failure cut "
        f"short is done again); free space or fix the folder, then run the same command again to resume."
    )


def localize_folder(
    crossfire_map: CrossfireMap,
    inputs: FolderInputs,
    output_dir: Path,
    matcher: Optional[MatcherConfig] = None,
    prior: PriorKind = "retrieval",
    retrieval: RetrievalScore = "matches",
    intrinsics: Optional[IntrinsicsFlags] = None,
    max_image_side: int = MAX_IMAGE_SIDE,
    scene_extent: Optional[float] = None,
    recall_thresholds: Sequence[Tuple[float, float]] = DEFAULT_RECALL_THRESHOLDS,
    overlays: bool = False,
    overwrite: bool = False,
    console: Optional[Console] = None,
) -> Dict[str, Any]:
    """Localize ``inputs`` against the map, write poses.json, results.csv, summary.json, errors.png (and overlays/)
    into ``output_dir``; returns the summary. ``scene_extent`` (original units) defaults to the training cameras'.

    Each query's result is appended to results.csv as it finishes and poses.json / summary.json are rewritten every
    ``WRITE_EVERY`` queries, so an interruption (Ctrl-C: ``KeyboardInterrupt`` is re-raised after the writes) loses
    nothing; the same call again reuses the finished queries. ``overwrite`` starts afresh."""
    console = console or CONSOLE
    out = Path(output_dir)
    matcher = matcher if matcher is not None else CrossfireMatcherConfig()
    prepare_output_dir(out, overwrite)
    identity = run_identity(
        crossfire_map,
        inputs,
        matcher,
        prior=prior,
        retrieval=retrieval,
        intrinsics=None if intrinsics is None else dataclasses.asdict(intrinsics),
        max_image_side=max_image_side,
        prior_poses=sorted(inputs.prior_poses),
    )
    finished = _finished_results(out, identity, overwrite, console)
    if overwrite:
        for name in (*OUTPUT_FILES, RUN_FILE):
            (out / name).unlink(missing_ok=True)
    try:
        write_json_atomic(out / RUN_FILE, identity)
    except OSError as err:
        raise _write_error(out / RUN_FILE, err) from err
    todo = [q for q in inputs.queries if q.file_path not in finished]
    reused = len(inputs.queries) - len(todo)
    if reused:
        console.print(
            f"Resuming {out}: {reused} of {len(inputs.queries)} queries reused from results.csv, {len(todo)} to do."
        )
    kept = len(finished) - reused
    if kept:
        console.print(
            f"Keeping the results of {kept} finished queries of this run that it does not localize (past "
            f"--max-queries or gone from the query folder): they stay in the outputs."
        )
    extent = scene_extent or crossfire_map.camera_extent()
    name = matcher_name(matcher)
    metadata = {"matcher": name, "query_dir": str(inputs.query_dir.resolve())}

    def write(results: List[QueryResult], final: bool) -> Dict[str, Any]:
        summary, thresholds = evaluate(results, extent, recall_thresholds)
        summary.update({"matcher": name, "prior": prior, "config": str(crossfire_map.config_path)})
        summary.update({"complete": final and progress.done(), "reused": reused, "kept": kept})
        try:
            if final:
                write_outputs(out, results, [*inputs.queries, *inputs.beyond], summary, thresholds, metadata)
            else:
                write_poses_json(out / "poses.json", results, [*inputs.queries, *inputs.beyond], metadata=metadata)
                write_json_atomic(out / "summary.json", summary)
        except OSError as err:
            raise _write_error(out, err) from err
        return summary

    try:
        progress = _Progress(out, inputs, finished, write)
    except OSError as err:
        raise _write_error(out / "results.csv", err) from err
    map_localizer = MapLocalizer(crossfire_map, matcher, retrieval=retrieval, max_image_side=max_image_side)
    try:
        localize_queries(
            crossfire_map,
            todo,
            prior=prior,
            prior_poses=inputs.prior_poses,
            intrinsics=intrinsics,
            map_localizer=map_localizer,
            on_result=progress,
            console=console,
        )
    except KeyboardInterrupt:
        done = progress.ordered()
        write(done, final=False)
        console.print(
            f"[yellow]Interrupted after {len(done)} of {len(inputs.queries)} queries; their results are in {out}/. "
            f"Run the same command again to resume."
        )
        raise
    finally:
        progress.close()
    results = progress.ordered()
    summary = write(results, final=True)
    print_results_table(results, summary, console=console)
    if overlays:
        write_overlays(out / "overlays", results, inputs.queries, map_localizer)
    console.print(f"Outputs in {out}/: {', '.join(OUTPUT_FILES)}")
    return summary


_PLAIN_PART = re.compile(r"[A-Za-z0-9.-]+(_[A-Za-z0-9.-]+)*")
"""A path component that can be joined by "__" and still be told apart: safe characters, no "__", no "_" at an end."""

_READABLE_CHARS = 80
"""Overlay names keep at most this many characters of the query's path (then a hash of the whole path)."""


def overlay_name(file_path: str) -> str:
    """A flat file name for a query's overlay, distinct for distinct ``file_path``s and never leaving the overlays
    folder: a relative path of plain parts ending in .png is its parts joined by "__" (``images/q.png`` ->
    ``images__q.png``); any other (absolute, ``..``, another extension, odd characters, very long) is the parts made
    safe and a hash of the whole path (``q.jpg`` -> ``q.jpg-<hash>.png``), so ``q.png`` and ``q.jpg`` never collide."""
    posix = PurePosixPath(file_path.replace("\\", "/"))
    plain = (
        not posix.is_absolute()
        and not PureWindowsPath(file_path).drive
        and posix.suffix == ".png"
        and len(file_path) <= _READABLE_CHARS
        and all(_PLAIN_PART.fullmatch(part) and part not in (".", "..") for part in posix.parts)
        and str(posix) == file_path
    )
    if plain:
        return "__".join(posix.parts)
    parts = [re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("._") for part in posix.parts if part not in ("/", "..")]
    readable = "__".join(part for part in parts if part)[:_READABLE_CHARS] or "query"
    digest = hashlib.sha256(file_path.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
    return f"{readable}-{digest}.png"


def write_overlays(folder: Path, results, queries, map_localizer: MapLocalizer) -> None:
    """overlays/<``overlay_name``>: each localized query of ``queries`` beside the map rendered at its estimate (at the
    size it was localized at)."""
    crossfire_map, localizer = map_localizer.map, map_localizer.localizer
    by_path = {q.file_path: q for q in queries}
    for result in results:
        query = by_path.get(result.file_path)
        if query is None or result.c2w is None or query.K is None:
            continue  # a result kept from an earlier run of queries this one does not include, or no pose
        image = read_query_image(query)
        image, K = downscale_to(image, query.K, map_localizer.max_side_for(image.shape[1], image.shape[0], query.K))
        height, width = image.shape[:2]
        view = localizer.renderer.render(crossfire_map.to_normalized(result.c2w), K, width, height)
        render = (view.rgb.clamp(0, 1) * 255).byte().cpu().numpy()
        write_overlay(folder / overlay_name(result.file_path), image, render)
