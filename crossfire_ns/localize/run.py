"""The ns-localize run: load the map and the queries, localize each, evaluate, write the outputs.

One query failing (unreadable file, too few matches) is recorded and the run goes on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from crossfire_ns.localize.geometry import (
    c2w_pose_errors,
    normalized_to_original,
    original_to_normalized,
    saved_frame_normalization,
    scale_intrinsics,
)
from crossfire_ns.localize.localizer import Localizer
from crossfire_ns.localize.metrics import summarize
from crossfire_ns.localize.outputs import (
    plot_errors,
    print_results_table,
    read_poses_json,
    write_csv_atomic,
    write_json_atomic,
    write_poses_json,
)
from crossfire_ns.localize.priors import RetrievalIndex
from crossfire_ns.localize.queries import (
    QueryImage,
    QueryImageError,
    QueryInputError,
    load_query_set,
    read_query_image,
    undistort_if_needed,
)

if TYPE_CHECKING:
    from crossfire_ns.scripts.localize import Localize


def _fail(message: str):
    from crossfire_ns.scripts.localize import LocalizeError

    raise LocalizeError(message)


def load_map(config_path: Path, data: Optional[Path] = None):
    """The trained pipeline, found relative to its config.yml (whatever the current directory is)."""
    from nerfstudio.utils.eval_utils import eval_setup

    import method_configs.crossfire_methods  # noqa: F401  (registers the checkpoint fix)

    if not config_path.is_file():
        _fail(f"{config_path}: no such file. Pass the config.yml that ns-train wrote (outputs/<exp>/<method>/<time>/).")

    def relocate(config):
        base = config_path.resolve().parent
        if (base.name, base.parent.name) == (config.timestamp, config.method_name):
            config.output_dir = base.parent.parent.parent
            config.experiment_name = base.parent.parent.name
        if data is not None:
            config.data = data
            config.pipeline.datamanager.data = data
            config.pipeline.datamanager.dataparser.data = data
        source = config.pipeline.datamanager.data or config.pipeline.datamanager.dataparser.data
        if source is not None and not Path(source).exists():
            _fail(f"{config_path}: the training data {source} is gone; pass --data with its new location.")
        if not str(config.method_name).startswith("crossfire"):
            _fail(
                f"{config_path}: method {config.method_name!r} is not a crossfire map; train with ns-train crossfire-lite."
            )
        return config

    try:
        _, pipeline, checkpoint, step = eval_setup(config_path, test_mode="val", update_config_callback=relocate)
    except FileNotFoundError as err:
        _fail(f"{config_path}: could not load the map ({err}). Is training finished (nerfstudio_models/*.ckpt)?")
    CONSOLE.print(f"Loaded map {config_path.parent} at step {step} ({checkpoint.name}).")
    return pipeline


def frame_normalization(pipeline) -> Tuple[np.ndarray, float]:
    """(transform, scale) from the transforms.json frame of the training data to the normalised frame."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    transform = outputs.dataparser_transform.cpu().numpy()
    scale = float(outputs.dataparser_scale)
    data = Path(pipeline.datamanager.config.data or "")
    meta_file = data / "transforms.json" if data.is_dir() else data
    if meta_file.suffix == ".json" and meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        return saved_frame_normalization(transform, scale, meta.get("applied_transform"), meta.get("applied_scale"))
    return transform, scale


def _default_intrinsics(args: "Localize", pipeline, width: int, height: int) -> Tuple[np.ndarray, str]:
    if args.fx is not None:
        fy = args.fy if args.fy is not None else args.fx
        cx = args.cx if args.cx is not None else width / 2
        cy = args.cy if args.cy is not None else height / 2
        return np.array([[args.fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), "command-line flags"
    cams = pipeline.datamanager.train_dataset.cameras
    K = np.array([[float(cams.fx[0]), 0, float(cams.cx[0])], [0, float(cams.fy[0]), float(cams.cy[0])], [0, 0, 1]])
    return scale_intrinsics(K, width / int(cams.width[0]), height / int(cams.height[0])), "the training camera"


def _priors_for(args, query, image, index, poses, normalization, previous) -> List[np.ndarray]:
    if args.prior == "poses":
        prior = poses.get(query.file_path)
        return [] if prior is None else [original_to_normalized(prior, *normalization)]
    if args.prior == "sequential" and previous is not None:
        return [previous]
    return index.query(image, args.localizer.top_k)


def run_localization(args: "Localize") -> int:
    if args.prior == "poses" and args.poses_file is None:
        _fail("--prior poses needs --poses-file (a transforms.json with a transform_matrix per file_path).")
    try:
        queries, warnings = load_query_set(args.query_dir)
    except QueryInputError as err:
        _fail(str(err))
    poses = _read_prior_poses(args.poses_file) if args.poses_file else {}
    for warning in warnings:
        CONSOLE.print(f"[yellow]warning: {warning}")
    if args.max_queries is not None:
        queries = queries[: args.max_queries]
    pipeline = load_map(args.load_config, args.data)
    model = pipeline.model
    normalization = frame_normalization(pipeline)
    train = pipeline.datamanager.train_dataset
    train_c2w = np.tile(np.eye(4), (len(train.cameras), 1, 1))
    train_c2w[:, :3, :4] = train.cameras.camera_to_worlds.cpu().numpy()
    extent = args.scene_extent or _camera_extent(normalized_to_original(train_c2w, *normalization))
    index = None
    if args.prior in ("retrieval", "sequential"):
        images = [train.get_image_float32(i) for i in range(len(train))]
        index = RetrievalIndex(
            model, images, train_c2w, score=args.retrieval, min_similarity=args.localizer.min_similarity
        )
    localizer = Localizer(model, args.localizer)
    results = _localize_all(args, queries, localizer, pipeline, index, poses, normalization)
    thresholds = [(frac * extent, deg) for frac, deg in args.recall_thresholds]
    summary = summarize(results, thresholds)
    summary.update(
        {
            "scene_extent": extent,
            "recall_thresholds_relative": [list(t) for t in args.recall_thresholds],
            "matcher": args.localizer.matcher,
            "prior": args.prior,
            "config": str(args.load_config),
            "renders": int(sum(r.num_renders for r in results)),
        }
    )
    _write_outputs(args, results, queries, summary, thresholds)
    print_results_table(results, summary, console=CONSOLE)
    if args.overlays:
        _write_overlays(args, results, queries, localizer, normalization)
    CONSOLE.print(f"Outputs in {args.output_dir}/: poses.json, results.csv, summary.json, errors.png")
    return 0


def _camera_extent(c2w: np.ndarray) -> float:
    centres = c2w[:, :3, 3]
    return float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0))) or 1.0


def _read_prior_poses(path: Path) -> dict:
    try:
        return read_poses_json(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        _fail(f"{path}: cannot read prior poses ({err}); give a transforms.json with frames[].transform_matrix.")


def _localize_all(args, queries: List[QueryImage], localizer: Localizer, pipeline, index, poses, normalization):
    from crossfire_ns.localize.results import QueryResult
    from crossfire_ns.scripts.localize import progress_bar

    results = []
    previous = None
    warned = False
    with progress_bar() as progress:
        task = progress.add_task("Localizing", total=len(queries))
        for query in queries:
            start = time.perf_counter()
            try:
                image = read_query_image(query)
            except QueryImageError as err:
                CONSOLE.print(f"[red]{err}")
                results.append(QueryResult(query.file_path, "unreadable", message=str(err), has_gt=query.has_gt))
                progress.advance(task)
                continue
            if query.K is None:
                query.K, source = _default_intrinsics(args, pipeline, image.shape[1], image.shape[0])
                query.width, query.height = image.shape[1], image.shape[0]
                if not warned:
                    CONSOLE.print(f"[yellow]warning: queries without intrinsics use {source}.")
                    warned = True
            image = undistort_if_needed(image, query.K, query.dist_coeffs, fisheye=query.fisheye)
            priors = _priors_for(args, query, image, index, poses, normalization, previous)
            try:
                estimate = localizer.estimate(image, query.K, priors) if priors else None
                message = "no prior for this query (--prior poses: is it in the poses file?)"
            except Exception as err:  # noqa: BLE001  one query's failure must not end the run
                estimate, message = None, f"{type(err).__name__}: {err}"
                CONSOLE.print(f"[red]{query.file_path}: localization failed with {message}")
            result = QueryResult(query.file_path, "failed", has_gt=query.has_gt, seconds=time.perf_counter() - start)
            if estimate is None:
                result.message = message
            else:
                result.message, result.num_matches = estimate.message, estimate.num_matches
                result.num_renders = estimate.num_renders
            if estimate is not None and estimate.success:
                previous = estimate.c2w
                result.status, result.num_inliers = "localized", estimate.num_inliers
                result.reprojection_error_px = estimate.reprojection_error_px
                result.c2w = normalized_to_original(estimate.c2w, *normalization)
                if query.c2w_gt is not None:
                    result.t_err, result.r_err = c2w_pose_errors(result.c2w, query.c2w_gt)
            results.append(result)
            progress.advance(task)
    return results


def _write_outputs(args, results, queries, summary, thresholds) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_poses_json(
        out / "poses.json",
        results,
        queries,
        metadata={"matcher": args.localizer.matcher, "query_dir": str(Path(args.query_dir).resolve())},
    )
    rows = []
    for r in results:
        row = r.to_dict()
        row.pop("c2w")
        rows.append(row)
    write_csv_atomic(out / "results.csv", rows)
    write_json_atomic(out / "summary.json", summary)
    plot_errors(out / "errors.png", results, thresholds)


def _write_overlays(args, results, queries, localizer: Localizer, normalization) -> None:
    from PIL import Image

    from crossfire_ns.localize.outputs import atomic_open

    folder = Path(args.output_dir) / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    by_path = {q.file_path: q for q in queries}
    for result in results:
        query = by_path[result.file_path]
        if result.c2w is None:
            continue
        image = read_query_image(query)
        height, width = image.shape[:2]
        view = localizer.renderer.render(original_to_normalized(result.c2w, *normalization), query.K, width, height)
        render = (view.rgb.clamp(0, 1) * 255).byte().cpu().numpy()
        name = Path(result.file_path).with_suffix(".png").name
        with atomic_open(folder / name, "wb") as handle:
            Image.fromarray(np.concatenate([image, render], axis=1)).save(handle, format="PNG")
