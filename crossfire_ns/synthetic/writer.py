"""Writing a scene: images first, then transforms.json files and scene.json, each atomically."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from crossfire_ns.io.atomic import atomic_open, write_json_atomic, write_png_atomic
from crossfire_ns.io.transforms import write_transforms
from crossfire_ns.synthetic.cameras import novel_view_poses, sample_poses, walk_pose, walk_poses
from crossfire_ns.synthetic.config import (
    GENERATOR_VERSION,
    QUERY_LIGHTING,
    TRAIN_LIGHTING,
    WORLD_UP,
    Lighting,
    NovelViewConfig,
    PinholeIntrinsics,
    SyntheticSceneConfig,
    WalkConfig,
)
from crossfire_ns.synthetic.geometry import Scene, build_scene, inside_objects, surface_distance
from crossfire_ns.synthetic.render import render_view, to_uint8


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG, written atomically."""
    write_png_atomic(path, to_uint8(rgb))


def validate_config(config: SyntheticSceneConfig) -> None:
    """Reject configs that would render nonsense (cameras outside the room, empty images, ...)."""
    if config.width < 1 or config.height < 1:
        raise ValueError(f"image size must be positive, got {config.width}x{config.height}")
    if config.supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {config.supersample}")
    if config.num_train < 1 or config.num_query < 0:
        raise ValueError(f"need num_train >= 1 and num_query >= 0, got {config.num_train}, {config.num_query}")
    if not 0.0 < config.fov_x_deg < 180.0:
        raise ValueError(f"fov_x_deg must be in (0, 180), got {config.fov_x_deg}")
    if config.camera_height_min > config.camera_height_max:
        raise ValueError("camera_height_min must not exceed camera_height_max")
    if config.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {config.layout!r}")
    if config.layout == "corridor":
        _validate_corridor(config)
        return
    if config.layout == "wall":
        _validate_wall(config)
        return
    inside_out = config.layout == "inside-out"
    horizontal = config.inside_out_radius if inside_out else config.camera_radius + config.camera_radius_jitter
    reach = max(horizontal, abs(config.camera_height_min), abs(config.camera_height_max))
    if reach >= config.room_half_size - 0.1:
        raise ValueError(f"cameras (reach {reach}) must stay inside the room (half size {config.room_half_size})")
    if inside_out and config.room_half_size - 0.2 - (config.inside_out_radius + 1.2) < 1.5:
        raise ValueError("room too small for inside-out: the objects need room between the cameras and the walls")
    if not inside_out and config.camera_radius - config.camera_radius_jitter < 2.0:
        raise ValueError("camera ring too small: cameras would collide with the central objects")


LAYOUTS = ("orbit", "inside-out", "corridor", "wall")
"""The generator's layouts (``SyntheticSceneConfig.layout``)."""


def _validate_heights(config: SyntheticSceneConfig, half_height: float) -> None:
    reach = max(abs(config.camera_height_min), abs(config.camera_height_max))
    if reach >= half_height - 0.1:
        raise ValueError(f"camera heights (reach {reach}) must stay inside the room (half height {half_height})")


def _validate_corridor(config: SyntheticSceneConfig) -> None:
    """The corridor's box, the cameras' band along its middle line and the objects' room beside it."""
    length, width, band = config.corridor_half_length, config.corridor_half_width, config.corridor_path_half_width
    if length < 3.0 or length <= width:
        raise ValueError(
            f"corridor_half_length ({length}) must be at least 3 and exceed corridor_half_width ({width}): "
            "the cameras walk along a long box, 2 units clear of its end walls"
        )
    if band < 0.0 or width - 0.2 - (band + 0.6) < 0.8:
        raise ValueError(
            f"corridor too narrow (half width {width}, cameras' band +/- {band}): the objects need 0.8 between the "
            "band (plus 0.6 clearance) and the side walls (less 0.2)"
        )
    if not 0.0 <= config.corridor_heading_deg <= 90.0 or not 0.0 <= config.corridor_elevation_deg < 90.0:
        raise ValueError("corridor_heading_deg must be in [0, 90] and corridor_elevation_deg in [0, 90)")
    if config.num_train < 2 and config.num_query > 0:
        raise ValueError("the corridor's queries lie between training views: need num_train >= 2")
    _validate_heights(config, config.room_half_size)


def _validate_wall(config: SyntheticSceneConfig) -> None:
    """The camera plane inside the room, the objects' room between it and the wall, small turns."""
    h, distance = config.room_half_size, config.wall_distance
    if distance < 2.0:
        raise ValueError(
            f"wall_distance ({distance}) too small: the objects need 0.8 between the cameras (plus 1.0 clearance) "
            "and the wall (less 0.2); use at least 2"
        )
    if distance > 2.0 * h - 0.5:
        raise ValueError(f"wall_distance ({distance}) puts the cameras outside the room (half size {h})")
    if not 0.0 <= config.wall_patch_half_width < h - 0.1:
        raise ValueError(f"wall_patch_half_width must be in [0, {h - 0.1}) (inside the room)")
    if not 0.0 <= config.wall_jitter_deg <= 45.0:
        raise ValueError(
            f"wall_jitter_deg must be in [0, 45] (the cameras look at the wall), got {config.wall_jitter_deg}"
        )
    if config.num_train < 2 and config.num_query > 0:
        raise ValueError("the wall's queries lie between training views: need num_train >= 2")
    _validate_heights(config, h)


def generate_scene(
    output_dir: Path,
    config: Optional[SyntheticSceneConfig] = None,
    train_lighting: Lighting = TRAIN_LIGHTING,
    query_lighting: Lighting = QUERY_LIGHTING,
    on_view: Optional[Callable[[str], None]] = None,
    workers: int = 1,
) -> Path:
    """Render and write the scene (layout below) and return ``output_dir``.

    ``output_dir/transforms.json`` + ``images/train_XXX.png`` (training views, nerfstudio format),
    ``output_dir/queries/transforms.json`` + ``queries/images/query_XXX.png`` (ground-truth poses in the
    same world frame, changed lighting) and ``output_dir/scene.json`` (metadata). With ``config.write_depth``
    also ``output_dir/depth/<image stem>.npy`` for every view (train_XXX, query_XXX): float32 (H, W) z-depth
    along the optical axis in world units, of the one ray through each pixel centre (not averaged over the
    supersamples, so back-projecting a pixel centre at its depth lands exactly on a surface), listed under
    ``depth`` in scene.json and not in transforms.json (nerfstudio does not load them). Images are written
    first and the JSON files last, each atomically, so a listed image always exists. ``on_view`` is
    called with each image's relative path after it is written (for progress reporting). ``workers`` > 1 renders
    views in that many processes (each view's noise has its own seed, so the files are the same as with one).
    """
    config = config if config is not None else SyntheticSceneConfig()
    validate_config(config)
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    (output_dir / "queries" / "images").mkdir(parents=True, exist_ok=True)

    scene = build_scene(config)
    intrinsics = PinholeIntrinsics.from_fov(config.width, config.height, config.fov_x_deg)
    train_poses, query_poses = sample_poses(config)

    depth_files: Dict[str, List[str]] = {"train": [], "query": []}

    def render_set(poses: np.ndarray, lighting: Lighting, prefix: str, base: Path, stream: int) -> List[dict]:
        frames = []
        jobs = [
            (c2w, intrinsics, lighting, scene, config.supersample, _noise_seed(config, stream, i))
            for i, c2w in enumerate(poses)
        ]
        mapper = pool.map if pool is not None else map  # in order either way
        for i, (c2w, (rgb, depth)) in enumerate(zip(poses, mapper(_render_job, jobs))):
            rel = f"images/{prefix}_{i:03d}.png"
            _write_png(base / rel, rgb)
            if config.write_depth:
                depth_rel = f"depth/{prefix}_{i:03d}.npy"
                _write_npy(output_dir / depth_rel, depth)
                depth_files["train" if stream == 0 else "query"].append(depth_rel)
            frames.append({"file_path": rel, "transform_matrix": c2w.tolist()})
            if on_view is not None:
                on_view(str((base / rel).relative_to(output_dir)))
        return frames

    workers = max(1, min(workers, len(train_poses) + len(query_poses)))
    spawn = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch's threads
    with ProcessPoolExecutor(workers, mp_context=spawn) if workers > 1 else nullcontext() as pool:
        train_frames = render_set(train_poses, train_lighting, "train", output_dir, 0)
        query_frames = render_set(query_poses, query_lighting, "query", output_dir / "queries", 1)

    write_transforms(output_dir / "transforms.json", train_frames, **intrinsics.to_transforms())
    write_transforms(output_dir / "queries" / "transforms.json", query_frames, **intrinsics.to_transforms())
    metadata = _metadata(config, scene, intrinsics, train_poses, query_poses, train_lighting, query_lighting)
    if config.write_depth:
        metadata["depth"] = {**depth_files, "definition": DEPTH_DEFINITION}
    write_json_atomic(output_dir / "scene.json", metadata)
    return output_dir


DEPTH_DEFINITION = (
    "float32 (H, W) .npy per view, same resolution as its image: z-depth (distance along the camera's optical "
    "axis, world units) of the ray through each pixel centre (u + 0.5, v + 0.5), not averaged over supersamples"
)
"""What a depth/*.npy file holds (also written into scene.json)."""


def _render_job(job: Tuple) -> Tuple[np.ndarray, np.ndarray]:
    """One view of ``generate_scene``: (c2w, intrinsics, lighting, scene, supersample, noise seed) -> (rgb, depth)."""
    c2w, intrinsics, lighting, scene, supersample, seed = job
    return render_view(c2w, intrinsics, lighting, scene, supersample, noise_seed=seed)


def _write_npy(path: Path, array: np.ndarray) -> None:
    """A float32 .npy, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.save(handle, np.asarray(array, dtype=np.float32))


def _noise_seed(config: SyntheticSceneConfig, stream: int, index: int) -> int:
    """Per-view sensor-noise seed: deterministic, distinct per seed, set and view."""
    return int(np.random.SeedSequence([config.seed, 5, stream, index]).generate_state(1)[0])


def _metadata(
    config: SyntheticSceneConfig,
    scene: Scene,
    intrinsics: PinholeIntrinsics,
    train_poses: np.ndarray,
    query_poses: np.ndarray,
    train_lighting: Lighting,
    query_lighting: Lighting,
) -> dict:
    """Contents of scene.json: everything needed to interpret (or regenerate) the scene."""
    centres = np.concatenate([train_poses[:, :3, 3], query_poses[:, :3, 3]])
    obj_lo = [scene.sphere_centers - scene.sphere_radii[:, None], scene.box_centers - scene.box_half_sizes]
    obj_hi = [scene.sphere_centers + scene.sphere_radii[:, None], scene.box_centers + scene.box_half_sizes]
    lo = np.min(np.concatenate([centres, *obj_lo]), axis=0)
    hi = np.max(np.concatenate([centres, *obj_hi]), axis=0)
    room_lo, room_hi = scene.bounds()
    return {
        "generator": "crossfire_ns.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "config": asdict(config),
        "world_up": list(WORLD_UP),
        "pose_convention": "transform_matrix is camera-to-world, OpenGL camera axes (x right, y up, looks -z)",
        "scene_extent": scene.extent(),
        "scene_extent_definition": "diagonal of the axis-aligned bounding box of all geometry (the room), world units",
        "camera_object_extent": float(np.linalg.norm(hi - lo)),
        "camera_object_extent_definition": "diagonal of the bounding box of all camera centres and central objects",
        "room": {"min": room_lo.tolist(), "max": room_hi.tolist()},
        "objects": scene.objects(),
        "intrinsics": intrinsics.to_transforms(),
        "lighting": {"train": asdict(train_lighting), "query": asdict(query_lighting)},
        "num_train": len(train_poses),
        "num_query": len(query_poses),
        "train_transforms": "transforms.json",
        "query_transforms": "queries/transforms.json",
    }


def generate_walk(
    output_dir: Path,
    config: Optional[SyntheticSceneConfig] = None,
    walk: Optional[WalkConfig] = None,
    on_view: Optional[Callable[[str], None]] = None,
) -> Path:
    """Render the path of ``walk`` into ``output_dir`` (``transforms.json`` with ground truth + ``images/frame_XXXX.png``,
    frames in order) and return ``output_dir``. With ``blur_steps`` > 1 each frame averages renders spread over the
    first ``shutter`` of the motion to the next frame (true motion blur, in linear colour before noise is added)."""
    config = config if config is not None else SyntheticSceneConfig()
    walk = walk if walk is not None else WalkConfig(frames=150)
    validate_config(config)
    if walk.frames < 1 or walk.blur_steps < 1 or walk.lighting not in ("query", "train"):
        raise ValueError(f"a walk needs frames >= 1, blur_steps >= 1 and lighting query|train, got {walk}")
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    scene = build_scene(config)
    intrinsics = PinholeIntrinsics.from_fov(config.width, config.height, config.fov_x_deg)
    lighting = QUERY_LIGHTING if walk.lighting == "query" else TRAIN_LIGHTING
    quiet = Lighting(**{**asdict(lighting), "noise_std": 0.0})
    poses = walk_poses(config, walk)
    frames = []
    for i, c2w in enumerate(poses):
        rel = f"images/frame_{i:04d}.png"
        if walk.blur_steps == 1:
            rgb, _ = render_view(
                c2w, intrinsics, lighting, scene, config.supersample, noise_seed=_noise_seed(config, 2, i)
            )
        else:
            u0, du = i / max(walk.frames - 1, 1), walk.shutter / max(walk.frames - 1, 1)
            sub = [walk_pose(config, walk, u0 + du * k / (walk.blur_steps - 1)) for k in range(walk.blur_steps)]
            rgb = np.mean([render_view(p, intrinsics, quiet, scene, config.supersample)[0] for p in sub], axis=0)
            if lighting.noise_std > 0:
                rng = np.random.default_rng(np.random.SeedSequence([_noise_seed(config, 2, i), 4]))
                rgb = np.clip(rgb + rng.normal(0.0, lighting.noise_std, size=rgb.shape), 0.0, 1.0)
        _write_png(output_dir / rel, rgb)
        frames.append({"file_path": rel, "transform_matrix": c2w.tolist()})
        if on_view is not None:
            on_view(rel)
    write_transforms(output_dir / "transforms.json", frames, **intrinsics.to_transforms(), walk=asdict(walk))
    return output_dir


def generate_novel_views(
    output_dir: Path,
    config: Optional[SyntheticSceneConfig] = None,
    novel: Optional[NovelViewConfig] = None,
    on_view: Optional[Callable[[str], None]] = None,
) -> Path:
    """Render queries from viewpoints no training camera took (``NovelViewConfig``) into ``output_dir``
    (``transforms.json`` with ground truth + ``images/novel_XXX.png``; with ``config.write_depth`` also
    ``depth/novel_XXX.npy``) and return ``output_dir``. Cameras keep ``novel.min_clearance`` from every surface."""
    config = config if config is not None else SyntheticSceneConfig()
    novel = novel if novel is not None else NovelViewConfig(views=12)
    validate_config(config)
    if novel.views < 1 or novel.lighting not in ("query", "train"):
        raise ValueError(f"novel views need views >= 1 and lighting query|train, got {novel}")
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    scene = build_scene(config)
    intrinsics = PinholeIntrinsics.from_fov(config.width, config.height, config.fov_x_deg)
    lighting = QUERY_LIGHTING if novel.lighting == "query" else Lighting(**{**asdict(TRAIN_LIGHTING), "noise_std": 0.0})

    def clear(c2w: np.ndarray) -> bool:  # clear of every surface, and not inside an object
        centre = c2w[None, :3, 3]
        return float(surface_distance(centre, scene)[0]) >= novel.min_clearance and not inside_objects(centre, scene)[0]

    poses = novel_view_poses(config, novel, accept=clear)
    frames = []
    for i, c2w in enumerate(poses):
        rel = f"images/novel_{i:03d}.png"
        rgb, depth = render_view(
            c2w, intrinsics, lighting, scene, config.supersample, noise_seed=_noise_seed(config, 3, i)
        )
        _write_png(output_dir / rel, rgb)
        if config.write_depth:
            _write_npy(output_dir / f"depth/novel_{i:03d}.npy", depth)
        frames.append({"file_path": rel, "transform_matrix": c2w.tolist()})
        if on_view is not None:
            on_view(rel)
    write_transforms(output_dir / "transforms.json", frames, **intrinsics.to_transforms(), novel_views=asdict(novel))
    return output_dir
