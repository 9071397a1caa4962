"""Camera poses of the bundled scene: look-at poses upright w.r.t. +z, the training views (on a ring looking in, near
the centre looking out, along a corridor or on a patch in front of a wall) and the queries between them."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from crossfire_ns.synthetic.config import WORLD_UP, NovelViewConfig, SyntheticSceneConfig, WalkConfig


def look_at(eye: Sequence[float], target: Sequence[float], roll_deg: float = 0.0) -> np.ndarray:
    """4x4 OpenGL camera-to-world at ``eye`` looking at ``target``, upright w.r.t. +z, then rolled."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    a = math.radians(roll_deg)
    right, up = math.cos(a) * right + math.sin(a) * up, -math.sin(a) * right + math.cos(a) * up
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def _ring_pose(rng: np.random.Generator, azimuth: float, config: SyntheticSceneConfig) -> np.ndarray:
    """One camera on the ring at ``azimuth``, random radius/height, looking near the centre."""
    radius = config.camera_radius + rng.uniform(-1.0, 1.0) * config.camera_radius_jitter
    height = rng.uniform(config.camera_height_min, config.camera_height_max)
    eye = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
    target = rng.normal(0.0, config.target_jitter, size=3)
    return look_at(eye, target, roll_deg=rng.uniform(-1.0, 1.0) * config.roll_jitter_deg)


def _outward_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit viewing direction at ``azimuth`` around +z and ``elevation`` above the horizontal (radians)."""
    return np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )


def _inside_out_pose(rng: np.random.Generator, azimuth: float, config: SyntheticSceneConfig) -> np.ndarray:
    """One camera near the centre (uniform in a disc, random height) looking out along ``azimuth``, tilted."""
    radius, angle = config.inside_out_radius * math.sqrt(rng.uniform()), rng.uniform(0.0, 2.0 * math.pi)
    eye = np.array([radius * math.cos(angle), radius * math.sin(angle), 0.0])
    eye[2] = rng.uniform(config.camera_height_min, config.camera_height_max)
    elevation = math.radians(rng.uniform(-1.0, 1.0) * config.inside_out_elevation_deg)
    roll = rng.uniform(-1.0, 1.0) * config.roll_jitter_deg
    return look_at(eye, eye + _outward_direction(azimuth, elevation), roll_deg=roll)


def _corridor_axis_pose(x: float, lateral: float, height: float, heading: float, elevation: float, roll: float):
    """A corridor camera at (x, lateral, height) looking at ``heading`` around +z (0: along +x), tilted, rolled."""
    eye = np.array([x, lateral, height])
    return look_at(eye, eye + _outward_direction(heading, elevation), roll_deg=roll)


def _corridor_pose(rng: np.random.Generator, s: float, config: SyntheticSceneConfig) -> np.ndarray:
    """The corridor's camera at ``s`` in [0, 1) along the path: x evenly along the middle line (within 2 units of
    the end walls), random offset off it and height; facing forwards (+x) or backwards by the nearest training
    index's parity, turned by up to corridor_heading_deg, tilted and rolled."""
    n = config.num_train
    half_path = config.corridor_half_length - 2.0
    x = half_path * (2.0 * (s + 0.5 / n) - 1.0)  # training s in [k - 0.25, k + 0.25] / n: x within +/- half_path
    lateral = rng.uniform(-1.0, 1.0) * config.corridor_path_half_width
    height = rng.uniform(config.camera_height_min, config.camera_height_max)
    backwards = int(round(s * n)) % 2 == 1
    heading = math.radians(rng.uniform(-1.0, 1.0) * config.corridor_heading_deg) + (math.pi if backwards else 0.0)
    elevation = math.radians(rng.uniform(-1.0, 1.0) * config.corridor_elevation_deg)
    roll = rng.uniform(-1.0, 1.0) * config.roll_jitter_deg
    return _corridor_axis_pose(x, lateral, height, heading, elevation, roll)


def _wall_plane_x(config: SyntheticSceneConfig) -> float:
    """x of the wall layout's camera plane (wall_distance in front of the +x wall)."""
    return config.room_half_size - config.wall_distance


def _wall_pose(rng: np.random.Generator, s: float, config: SyntheticSceneConfig) -> np.ndarray:
    """The wall layout's camera at ``s`` in [0, 1) across the patch: y evenly across it, random height; looking at
    the +x wall, turned and tilted by up to wall_jitter_deg, rolled."""
    n = config.num_train
    y = config.wall_patch_half_width * (2.0 * (s + 0.5 / n) - 1.0)
    height = rng.uniform(config.camera_height_min, config.camera_height_max)
    heading = math.radians(rng.uniform(-1.0, 1.0) * config.wall_jitter_deg)
    elevation = math.radians(rng.uniform(-1.0, 1.0) * config.wall_jitter_deg)
    roll = rng.uniform(-1.0, 1.0) * config.roll_jitter_deg
    eye = np.array([_wall_plane_x(config), y, height])
    return look_at(eye, eye + _outward_direction(heading, elevation), roll_deg=roll)


def _pose(rng: np.random.Generator, azimuth: float, config: SyntheticSceneConfig) -> np.ndarray:
    """The layout's camera at ``azimuth`` (orbit: its position on the ring; inside-out: its viewing direction;
    corridor and wall: its place along the path or across the patch, in [0, 1))."""
    if config.layout == "corridor":
        return _corridor_pose(rng, azimuth, config)
    if config.layout == "wall":
        return _wall_pose(rng, azimuth, config)
    return _inside_out_pose(rng, azimuth, config) if config.layout == "inside-out" else _ring_pose(rng, azimuth, config)


def _sweep(config: SyntheticSceneConfig) -> Tuple[float, bool]:
    """(span of the training parameter, whether it wraps around): an azimuth in radians for orbit and inside-out,
    the share of the path (corridor) or of the patch's width (wall), 0 to 1, for the others."""
    if config.layout in ("corridor", "wall"):
        return 1.0, False
    return math.radians(min(config.arc_deg, 360.0)), config.arc_deg >= 360.0


def sample_poses(config: SyntheticSceneConfig) -> Tuple[np.ndarray, np.ndarray]:
    """(num_train, 4, 4) training and (num_query, 4, 4) query OpenGL camera-to-world poses.

    Training azimuths are evenly spaced with jitter; queries sit at midpoints between neighbouring
    training azimuths (with a little jitter), with their own random heights and radii, so they are new
    poses rather than duplicates. Training and query poses use separate random streams. The azimuth is the
    camera's position on the ring (orbit) or its viewing direction (inside-out); corridor and wall spread the
    training views evenly along the path or across the patch instead, and the queries between them.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    span, full_circle = _sweep(config)
    step = span / config.num_train
    azimuths = np.arange(config.num_train) * step + rng.uniform(-0.25, 0.25, config.num_train) * step
    train = np.stack([_pose(rng, a, config) for a in azimuths]) if config.num_train else np.zeros((0, 4, 4))

    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 3]))
    ordered = np.sort(np.mod(azimuths, 2.0 * math.pi)) if full_circle else np.sort(azimuths)
    # On a full circle the last gap wraps around; on an arc, queries stay between training views.
    gaps = np.diff(np.concatenate([ordered, ordered[:1] + 2.0 * math.pi])) if full_circle else np.diff(ordered)
    midpoints = ordered[: len(gaps)] + gaps / 2.0
    picks = (np.arange(config.num_query) * len(gaps)) // max(config.num_query, 1) + len(gaps) // (
        2 * max(config.num_query, 1)
    )
    picks %= len(gaps)
    query_az = midpoints[picks] + rng.uniform(-0.15, 0.15, config.num_query) * gaps[picks]
    query = np.stack([_pose(rng, a, config) for a in query_az]) if config.num_query else np.zeros((0, 4, 4))
    return train, query


def walk_pose(config: SyntheticSceneConfig, walk: WalkConfig, u: float) -> np.ndarray:
    """The path's OpenGL camera-to-world at ``u`` in [0, 1] (start to end): smooth in position and orientation.

    Along the ring over ``walk.arc_deg`` from a seeded start azimuth; radius, height and the look-at target wiggle
    slowly (a few sine periods over the path) within the ring's limits, so the camera moves as a robot's would.
    Inside-out: the viewing direction sweeps the azimuth while the camera drifts within the central disc. Corridor:
    the camera walks forwards (+x) along arc_deg / 360 of the path from a seeded start, drifting within the cameras'
    band and turning by up to half the training headings. Wall: the camera sweeps across the patch, swaying in
    height and heading."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, walk.seed, 11]))
    start, phases = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi, 4)
    if config.layout in ("corridor", "wall"):
        return _walk_pose_along(config, walk, u, start / (2 * math.pi), phases)
    azimuth = start + math.radians(walk.arc_deg) * u
    if config.layout == "inside-out":
        drift = 0.7 * config.inside_out_radius  # |(sin, cos)| <= sqrt(2): stays inside the disc
        eye = drift * np.array(
            [math.sin(2 * math.pi * u + phases[0]), math.cos(2 * math.pi * 1.5 * u + phases[1]), 0.0]
        )
        eye[2] = 0.5 * (config.camera_height_min + config.camera_height_max)
        elevation = math.radians(0.5 * config.inside_out_elevation_deg * math.sin(2 * math.pi * u + phases[2]))
        return look_at(eye, eye + _outward_direction(azimuth, elevation))
    radius = config.camera_radius + config.camera_radius_jitter * math.sin(2 * math.pi * 1.5 * u + phases[0])
    middle = 0.5 * (config.camera_height_min + config.camera_height_max)
    half = 0.5 * (config.camera_height_max - config.camera_height_min)
    height = middle + half * math.sin(2 * math.pi * 1.0 * u + phases[1])
    eye = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
    target = config.target_jitter * np.array(
        [math.sin(2 * math.pi * 2.0 * u + phases[2]), math.cos(2 * math.pi * 2.0 * u + phases[3]), 0.0]
    )
    return look_at(eye, target, roll_deg=config.roll_jitter_deg * math.sin(2 * math.pi * u + phases[0]))


def _walk_pose_along(
    config: SyntheticSceneConfig, walk: WalkConfig, u: float, start: float, phases: np.ndarray
) -> np.ndarray:
    """``walk_pose`` of the corridor and wall layouts (``start`` in [0, 1) and ``phases`` seeded)."""
    middle = 0.5 * (config.camera_height_min + config.camera_height_max)
    half = 0.5 * (config.camera_height_max - config.camera_height_min)
    height = middle + 0.7 * half * math.sin(2 * math.pi * u + phases[1])
    if config.layout == "corridor":
        share = min(walk.arc_deg / 360.0, 1.0)
        along = (1.0 - share) * start + share * u  # share of the path, 0 to 1
        x = (config.corridor_half_length - 2.0) * (2.0 * along - 1.0)
        lateral = 0.7 * config.corridor_path_half_width * math.sin(2 * math.pi * 1.5 * u + phases[0])
        heading = math.radians(0.5 * config.corridor_heading_deg * math.sin(2 * math.pi * u + phases[2]))
        elevation = math.radians(0.5 * config.corridor_elevation_deg * math.sin(2 * math.pi * 2.0 * u + phases[3]))
        return _corridor_axis_pose(x, lateral, height, heading, elevation, 0.0)
    y = 0.9 * config.wall_patch_half_width * (2.0 * u - 1.0)
    heading = math.radians(0.5 * config.wall_jitter_deg * math.sin(2 * math.pi * u + phases[2]))
    elevation = math.radians(0.5 * config.wall_jitter_deg * math.sin(2 * math.pi * 1.5 * u + phases[3]))
    eye = np.array([_wall_plane_x(config), y, height])
    return look_at(eye, eye + _outward_direction(heading, elevation))


def walk_poses(config: SyntheticSceneConfig, walk: WalkConfig) -> np.ndarray:
    """(walk.frames, 4, 4) poses of the path's frames, evenly spaced along it."""
    if walk.frames <= 0:
        return np.zeros((0, 4, 4))
    steps = np.linspace(0.0, 1.0, walk.frames)
    return np.stack([walk_pose(config, walk, float(u)) for u in steps])


def _novel_pose(rng: np.random.Generator, index: int, config: SyntheticSceneConfig, novel: NovelViewConfig):
    """One pose off the capture path (see ``NovelViewConfig``): inside-out, a centre farther from the axis than any
    training camera's, looking out; orbit, a ring closer or farther than the training ring (alternately), looking
    past the centre; corridor, off the middle line (0.5-2x the cameras' band, by ``distance_range``), anywhere along
    the path, turned and tilted beyond the training range; wall, closer to or farther from the wall than the camera
    plane (alternately, as orbit), across the patch widened ``height_scale`` times, turned and tilted beyond it."""
    middle = 0.5 * (config.camera_height_min + config.camera_height_max)
    half = 0.5 * (config.camera_height_max - config.camera_height_min) * novel.height_scale
    height = middle + rng.uniform(-1.0, 1.0) * half
    roll = rng.uniform(-1.0, 1.0) * novel.max_roll_deg
    if config.layout == "corridor":
        lo, hi = novel.distance_range
        lateral = config.corridor_path_half_width * rng.uniform(lo, hi) * (1.0 if rng.uniform() < 0.5 else -1.0)
        x = rng.uniform(-1.0, 1.0) * (config.corridor_half_length - 2.0)
        backwards = math.pi if rng.uniform() < 0.5 else 0.0
        heading = math.radians(rng.uniform(-1.0, 1.0) * (config.corridor_heading_deg + novel.extra_yaw_deg))
        limit = config.corridor_elevation_deg + novel.extra_pitch_deg
        elevation = math.radians(rng.uniform(-1.0, 1.0) * limit)
        return _corridor_axis_pose(x, lateral, height, heading + backwards, elevation, roll)
    if config.layout == "wall":
        scale = rng.uniform(0.75, 0.9) if index % 2 == 0 else rng.uniform(1.15, 1.45)
        y = rng.uniform(-1.0, 1.0) * config.wall_patch_half_width * novel.height_scale
        heading = math.radians(rng.uniform(-1.0, 1.0) * (config.wall_jitter_deg + novel.extra_yaw_deg))
        elevation = math.radians(rng.uniform(-1.0, 1.0) * (config.wall_jitter_deg + novel.extra_pitch_deg))
        eye = np.array([config.room_half_size - config.wall_distance * scale, y, height])
        return look_at(eye, eye + _outward_direction(heading, elevation), roll_deg=roll)
    if config.layout == "inside-out":
        lo, hi = novel.distance_range
        radius = config.inside_out_radius * rng.uniform(lo, hi)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        eye = np.array([radius * math.cos(angle), radius * math.sin(angle), height])
        limit = config.inside_out_elevation_deg + novel.extra_pitch_deg
        elevation = math.radians(rng.uniform(-1.0, 1.0) * limit)
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        return look_at(eye, eye + _outward_direction(azimuth, elevation), roll_deg=roll)
    scale = rng.uniform(0.75, 0.9) if index % 2 == 0 else rng.uniform(1.15, 1.45)
    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    radius = config.camera_radius * scale
    eye = np.array([radius * math.cos(azimuth), radius * math.sin(azimuth), height])
    # look at the centre, then turn the heading and pitch by up to the extra angles
    forward = -eye / np.linalg.norm(eye)
    yaw = math.radians(rng.uniform(-1.0, 1.0) * novel.extra_yaw_deg)
    pitch = math.radians(rng.uniform(-1.0, 1.0) * novel.extra_pitch_deg)
    heading = math.atan2(forward[1], forward[0]) + yaw
    elevation = math.asin(float(np.clip(forward[2], -1.0, 1.0))) + pitch
    return look_at(eye, eye + _outward_direction(heading, elevation), roll_deg=roll)


def novel_view_poses(
    config: SyntheticSceneConfig, novel: NovelViewConfig, accept: Optional[Callable[[np.ndarray], bool]] = None
) -> np.ndarray:
    """(novel.views, 4, 4) OpenGL camera-to-world poses off the capture path (``NovelViewConfig``), deterministic
    given both seeds. ``accept(c2w)`` may reject a pose (e.g. a camera too near a surface); it is drawn again."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, novel.seed, 13]))
    poses = []
    for i in range(novel.views):
        for _ in range(1000):
            c2w = _novel_pose(rng, i, config, novel)
            if accept is None or accept(c2w):
                break
        else:
            raise ValueError("no novel viewpoint keeps its clearance from the surfaces; lower min_clearance")
        poses.append(c2w)
    return np.stack(poses) if poses else np.zeros((0, 4, 4))
