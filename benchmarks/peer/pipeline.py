"""The structure-based peer as a command: build (or reuse) the SIFT map of the training views, localize every
query, and write the same outputs as ns-localize (poses.json, results.csv, summary.json, errors.png).

    python -m benchmarks.peer --train-dir T --query-dir Q --output-dir O [--scene-extent E]

The map is cached in ``--map-dir`` (default ``O/../peer-map``) with the settings it was built with; a run with
other settings or other training views rebuilds it. Everything runs on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from rich.console import Console

from benchmarks.peer.cameras import cam_from_world, colmap_camera, rigid_to_c2w
from benchmarks.peer.features import Features, SiftConfig, extract, make_extractor
from benchmarks.peer.localization import LocalizationConfig, localize
from benchmarks.peer.matching import MatchConfig, epipolar_inliers, make_matcher, match
from benchmarks.peer.pairs import pairs_from_poses
from benchmarks.peer.triangulation import SfmMap, TriangulationConfig, build_tracks, triangulate_tracks
from crossfire_ns.geometry import c2w_pose_errors, opengl_c2w_to_opencv_w2c
from crossfire_ns.io.atomic import atomic_open, write_csv_atomic, write_json_atomic
from crossfire_ns.io.queries import QueryImage, QueryImageError, load_query_set, read_query_image
from crossfire_ns.io.transforms import write_poses_json
from crossfire_ns.localize.outputs import plot_errors, print_results_table
from crossfire_ns.metrics import camera_extent, summarize
from crossfire_ns.results import QueryResult

CONSOLE = Console()
MATCHER_NAME = "sfm-sift"
"""The peer's name in the outputs and in the benchmark table."""


@dataclass
class MapConfig:
    """How the training views become a 3D point map."""

    sift: SiftConfig = field(default_factory=SiftConfig)
    """Feature extraction."""
    matching: MatchConfig = field(default_factory=MatchConfig)
    """Descriptor matching (training pairs and queries)."""
    num_neighbours: int = 10
    """Each training view is matched with this many nearest views (by camera centre)."""
    max_pair_angle_deg: float = 60.0
    """...among those whose optical axis is within this angle of its own."""
    epipolar_max_px: float = 4.0
    """Matches between training views further than this from the known epipolar geometry are dropped."""
    triangulation: TriangulationConfig = field(default_factory=TriangulationConfig)
    """Point triangulation from the known poses."""


@dataclass
class PeerMap:
    """Everything the queries need: per-view features and cameras, the points, and build statistics."""

    views: List[QueryImage]
    features: List[Features]
    cameras: List[Any]
    sfm: SfmMap
    stats: Dict[str, Any]


def _camera_of(view: QueryImage, image_shape) -> Any:
    height, width = image_shape[:2]
    return colmap_camera(view.K, view.width or width, view.height or height, view.dist_coeffs, view.fisheye)


def build_map(train_dir: Path, config: MapConfig, console: Console = CONSOLE) -> PeerMap:
    """Features of every training view, matches between pose neighbours, tracks and triangulated points."""
    start = time.perf_counter()
    views, _ = load_query_set(train_dir)
    if any(v.c2w_gt is None or v.K is None for v in views):
        raise ValueError(f"{train_dir}/transforms.json: every training frame needs intrinsics and a transform_matrix")
    extractor = make_extractor(config.sift)
    features, cameras = [], []
    for view in views:
        image = read_query_image(view)
        features.append(extract(extractor, image))
        cameras.append(_camera_of(view, image.shape))
    seconds_features = time.perf_counter() - start
    poses = [opengl_c2w_to_opencv_w2c(v.c2w_gt) for v in views]
    pairs = pairs_from_poses(np.stack([v.c2w_gt for v in views]), config.num_neighbours, config.max_pair_angle_deg)
    matcher = make_matcher(config.matching)
    pair_matches: Dict[Tuple[int, int], np.ndarray] = {}
    raw = 0
    for i, j in pairs:
        matches = match(matcher, features[i], features[j])
        raw += len(matches)
        if len(matches) == 0:
            continue
        x1 = np.asarray(cameras[i].cam_from_img(features[i].xy[matches[:, 0]]))
        x2 = np.asarray(cameras[j].cam_from_img(features[j].xy[matches[:, 1]]))
        focal = 0.5 * (cameras[i].mean_focal_length() + cameras[j].mean_focal_length())
        keep = epipolar_inliers(x1, x2, poses[i], poses[j], config.epipolar_max_px / focal)
        if keep.any():
            pair_matches[(i, j)] = matches[keep]
    seconds_matching = time.perf_counter() - start - seconds_features
    tracks = build_tracks([len(f) for f in features], pair_matches)
    sfm = triangulate_tracks(
        tracks, [f.xy for f in features], cameras, [cam_from_world(v.c2w_gt) for v in views], config.triangulation
    )
    seconds = time.perf_counter() - start
    stats = {
        "mapping_seconds": seconds,
        "feature_seconds": seconds_features,
        "matching_seconds": seconds_matching,
        "triangulation_seconds": seconds - seconds_features - seconds_matching,
        "num_images": len(views),
        "mean_keypoints": float(np.mean([len(f) for f in features])) if features else 0.0,
        "num_pairs": len(pairs),
        "num_raw_matches": raw,
        "num_verified_matches": int(sum(len(m) for m in pair_matches.values())),
        "num_tracks": len(tracks),
        "num_points": len(sfm.points3d),
        "mean_track_length": float(sfm.track_lengths.mean()) if len(sfm.track_lengths) else 0.0,
    }
    console.print(
        f"[bold]peer map[/]: {len(views)} views, {stats['mean_keypoints']:.0f} SIFT keypoints each, {len(pairs)} pairs, "
        f"{stats['num_points']} points (mean track {stats['mean_track_length']:.1f}) in {seconds:.1f} s"
    )
    return PeerMap(views, features, cameras, sfm, stats)


def _map_key(train_dir: Path, config: MapConfig) -> str:
    transforms = (Path(train_dir) / "transforms.json").read_bytes()
    text = json.dumps({"transforms": hashlib.sha256(transforms).hexdigest(), "config": asdict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_map(peer_map: PeerMap, map_dir: Path, key: str) -> None:
    """``map.npz`` (features, point ids, points) and ``map.json`` (key and statistics), written atomically."""
    arrays: Dict[str, np.ndarray] = {"points3d": peer_map.sfm.points3d, "track_lengths": peer_map.sfm.track_lengths}
    for i, (f, ids) in enumerate(zip(peer_map.features, peer_map.sfm.point_ids)):
        arrays[f"keypoints_{i}"], arrays[f"descriptors_{i}"], arrays[f"point_ids_{i}"] = f.keypoints, f.descriptors, ids
    with atomic_open(Path(map_dir) / "map.npz", "wb") as handle:
        np.savez_compressed(handle, **arrays)
    write_json_atomic(Path(map_dir) / "map.json", {"key": key, "stats": peer_map.stats})


def load_map(train_dir: Path, map_dir: Path, key: str) -> Optional[PeerMap]:
    """The cached map if it was built from the same training views with the same settings, else None."""
    meta_file, data_file = Path(map_dir) / "map.json", Path(map_dir) / "map.npz"
    if not (meta_file.is_file() and data_file.is_file()):
        return None
    meta = json.loads(meta_file.read_text())
    if meta.get("key") != key:
        return None
    views, _ = load_query_set(train_dir)
    with np.load(data_file) as data:
        features = [Features(data[f"keypoints_{i}"], data[f"descriptors_{i}"]) for i in range(len(views))]
        sfm = SfmMap(data["points3d"], [data[f"point_ids_{i}"] for i in range(len(views))], data["track_lengths"])
    cameras = [colmap_camera(v.K, v.width, v.height, v.dist_coeffs, v.fisheye) for v in views]
    return PeerMap(views, features, cameras, sfm, {**meta["stats"], "cached": True})


@dataclass
class SfmPeer:
    """hloc-style structure-based localization with pycolmap: SIFT, points triangulated from the known training
    poses, query-to-training matching and PnP. Uses no radiance field."""

    train_dir: Path
    """Folder of the training transforms.json (the map's views and their known poses)."""
    query_dir: Path
    """Folder of the queries' transforms.json (intrinsics, distortion, optional ground truth), as for ns-localize."""
    output_dir: Path
    """Where poses.json, results.csv, summary.json and errors.png go."""
    map_dir: Optional[Path] = None
    """Cache of the triangulated map (default: output_dir/../peer-map)."""
    scene_extent: Optional[float] = None
    """Scene size for the recall thresholds (default: diagonal of the training cameras' bounding box)."""
    recall_thresholds: Tuple[Tuple[float, float], ...] = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))
    """Recall thresholds as (fraction of scene extent, degrees), as ns-localize's."""
    max_queries: Optional[int] = None
    """Only the first N queries."""
    mapping: MapConfig = field(default_factory=MapConfig)
    """How the map is built."""
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)
    """How a query is localized."""
    rebuild: bool = False
    """Build the map again even if the cache matches."""

    def main(self) -> int:
        import pycolmap

        pycolmap.logging.minloglevel = 2  # COLMAP's per-call INFO lines would drown the progress output
        map_dir = self.map_dir or Path(self.output_dir).parent / "peer-map"
        key = _map_key(self.train_dir, self.mapping)
        peer_map = None if self.rebuild else load_map(self.train_dir, map_dir, key)
        if peer_map is None:
            peer_map = build_map(self.train_dir, self.mapping)
            save_map(peer_map, map_dir, key)
        else:
            CONSOLE.print(f"Reusing the peer map in {map_dir} ({peer_map.stats['num_points']} points).")
        queries, warnings = load_query_set(self.query_dir)
        for warning in warnings:
            CONSOLE.print(f"[yellow]warning: {warning}")
        if self.max_queries is not None:
            queries = queries[: self.max_queries]
        results = self.localize_all(queries, peer_map)
        extent = self.scene_extent or camera_extent(np.stack([v.c2w_gt for v in peer_map.views]))
        thresholds = [(frac * extent, deg) for frac, deg in self.recall_thresholds]
        summary = summarize(results, thresholds)
        summary.update(
            {
                "scene_extent": extent,
                "recall_thresholds_relative": [list(t) for t in self.recall_thresholds],
                "matcher": MATCHER_NAME,
                "prior": "exhaustive matching to every training view",
                "mapping": peer_map.stats,
                "mapping_seconds": peer_map.stats["mapping_seconds"],
            }
        )
        out = Path(self.output_dir)
        write_poses_json(out / "poses.json", results, queries, metadata={"matcher": MATCHER_NAME})
        write_csv_atomic(out / "results.csv", [{k: v for k, v in r.to_dict().items() if k != "c2w"} for r in results])
        write_json_atomic(out / "summary.json", summary)
        plot_errors(out / "errors.png", results, thresholds)
        print_results_table(results, summary, console=CONSOLE)
        return 0

    def localize_all(self, queries: List[QueryImage], peer_map: PeerMap) -> List[QueryResult]:
        extractor = make_extractor(self.mapping.sift)
        matcher = make_matcher(self.mapping.matching)
        results = []
        for query in queries:
            start = time.perf_counter()
            try:
                image = read_query_image(query)
            except QueryImageError as err:
                results.append(QueryResult(query.file_path, "unreadable", message=str(err), has_gt=query.has_gt))
                continue
            if query.K is None:  # as ns-localize: the training camera, scaled to the query's size
                train = peer_map.views[0]
                query.K = np.diag([image.shape[1] / train.width, image.shape[0] / train.height, 1.0]) @ train.K
                query.width, query.height = image.shape[1], image.shape[0]
            result = QueryResult(query.file_path, "failed", has_gt=query.has_gt)
            try:
                camera = _camera_of(query, image.shape)
                estimate = localize(
                    extract(extractor, image), camera, peer_map.features, peer_map.sfm, matcher, self.localization
                )
                result.message, result.num_matches = estimate.message, estimate.num_matches
                if estimate.success:
                    result.status, result.num_inliers = "localized", estimate.num_inliers
                    result.reprojection_error_px = estimate.reprojection_error_px
                    result.c2w = rigid_to_c2w(estimate.rigid)
                    if query.c2w_gt is not None:
                        result.t_err, result.r_err = c2w_pose_errors(result.c2w, query.c2w_gt)
            except Exception as err:  # noqa: BLE001  one query's failure must not end the run
                result.message = f"{type(err).__name__}: {err}"
            result.seconds = time.perf_counter() - start
            results.append(result)
        return results
