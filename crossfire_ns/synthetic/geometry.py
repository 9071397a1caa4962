"""The analytic scene (a closed room with spheres and boxes): building it and casting rays into it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from crossfire_ns.synthetic.config import NUM_ROOM_FACES, SyntheticSceneConfig
from crossfire_ns.synthetic.textures import Material, random_material


@dataclass(frozen=True, eq=False)
class Scene:
    """The analytic geometry and materials; material ids: room faces 0..5, then spheres, then boxes."""

    room_half_size: float
    """The room is the cube [-room_half_size, room_half_size]^3 (unless room_half_extents is set)."""
    sphere_centers: np.ndarray
    """(S, 3) sphere centres."""
    sphere_radii: np.ndarray
    """(S,) sphere radii."""
    box_centers: np.ndarray
    """(B, 3) centres of the axis-aligned boxes."""
    box_half_sizes: np.ndarray
    """(B, 3) half side lengths of the boxes."""
    materials: Tuple[Material, ...]
    """One material per room face, sphere and box, in that order."""
    room_half_extents: Optional[Tuple[float, float, float]] = None
    """A box room (the corridor): its half sizes along x, y and z, in place of the cube of room_half_size."""

    @staticmethod
    def create(
        room_half_size: float,
        sphere_centers: Sequence[Sequence[float]] = (),
        sphere_radii: Sequence[float] = (),
        box_centers: Sequence[Sequence[float]] = (),
        box_half_sizes: Sequence[Sequence[float]] = (),
        seed: int = 0,
        texture_scale: float = 1.0,
        room_half_extents: Optional[Sequence[float]] = None,
    ) -> "Scene":
        """A scene from explicit geometry, with random (seeded) materials; useful for tests."""
        spheres_c = np.asarray(sphere_centers, dtype=np.float64).reshape(-1, 3)
        boxes_c = np.asarray(box_centers, dtype=np.float64).reshape(-1, 3)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        n_objects = len(spheres_c) + len(boxes_c)
        materials = tuple(
            random_material(
                rng, salt=1000 * (seed % 100000) + i, scale=texture_scale * (1.0 if i < NUM_ROOM_FACES else 0.45)
            )
            for i in range(NUM_ROOM_FACES + n_objects)
        )
        return Scene(
            room_half_size=float(room_half_size),
            sphere_centers=spheres_c,
            sphere_radii=np.asarray(sphere_radii, dtype=np.float64).reshape(-1),
            box_centers=boxes_c,
            box_half_sizes=np.asarray(box_half_sizes, dtype=np.float64).reshape(-1, 3),
            materials=materials,
            room_half_extents=None if room_half_extents is None else tuple(float(v) for v in room_half_extents),
        )

    def half_sizes(self):
        """The room's half size: the float room_half_size for a cube, or the (3,) per-axis room_half_extents (either
        broadcasts against (N, 3) points)."""
        if self.room_half_extents is None:
            return self.room_half_size
        return np.asarray(self.room_half_extents, dtype=np.float64)

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box of all geometry (that is, of the room)."""
        h = self.half_sizes()
        return -np.broadcast_to(h, 3).astype(np.float64), np.broadcast_to(h, 3).astype(np.float64)

    def extent(self) -> float:
        """Diagonal of the bounding box of all geometry (the room): the scene's overall size."""
        lo, hi = self.bounds()
        return float(np.linalg.norm(hi - lo))

    def objects(self) -> List[dict]:
        """JSON-friendly description of the central objects."""
        out = [
            {"type": "sphere", "center": c.tolist(), "radius": float(r)}
            for c, r in zip(self.sphere_centers, self.sphere_radii)
        ]
        out += [
            {"type": "box", "center": c.tolist(), "half_size": s.tolist()}
            for c, s in zip(self.box_centers, self.box_half_sizes)
        ]
        return out


CentreSampler = Callable[[np.random.Generator, float], Optional[np.ndarray]]
"""Draws an object's centre given its bounding radius (None: it cannot fit)."""


def _disc_centre(max_reach: float, min_reach: Optional[float]) -> CentreSampler:
    """Centres whose bounding sphere stays within ``max_reach`` of the z axis; with ``min_reach`` also outside that
    radius (an annulus, uniform in area), else anywhere in the disc (orbit, inside-out)."""

    def sample(rng: np.random.Generator, bound: float) -> Optional[np.ndarray]:
        if min_reach is None:
            ang, rad = rng.uniform(0.0, 2.0 * np.pi), (max_reach - bound) * np.sqrt(rng.uniform())
        else:
            lo, hi = min_reach + bound, max(max_reach - bound, min_reach + bound)
            ang, rad = rng.uniform(0.0, 2.0 * np.pi), np.sqrt(rng.uniform(lo * lo, hi * hi))
        return np.array([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(-0.6, 0.7)])

    return sample


def _height(rng: np.random.Generator, bound: float, config: SyntheticSceneConfig, half_height: float) -> float:
    """An object's centre height around the cameras' (-0.6 to 0.7 with the default heights), its bounding sphere
    0.2 clear of the floor and the ceiling."""
    lo = max(config.camera_height_min - 0.3, -half_height + 0.2 + bound)
    hi = min(config.camera_height_max - 0.1, half_height - 0.2 - bound)
    return rng.uniform(lo, max(lo, hi))


def _corridor_centre(config: SyntheticSceneConfig) -> CentreSampler:
    """Against a side wall (either, at random): bounding spheres 0.6 beyond the cameras' band around the middle line
    and 0.2 inside the walls, anywhere along the corridor."""
    length, width = config.corridor_half_length, config.corridor_half_width

    def sample(rng: np.random.Generator, bound: float) -> Optional[np.ndarray]:
        lo, hi = config.corridor_path_half_width + 0.6 + bound, width - 0.2 - bound
        if hi < lo or length - 0.2 - bound <= 0.0:
            return None
        x = rng.uniform(-(length - 0.2 - bound), length - 0.2 - bound)
        y = (1.0 if rng.uniform() < 0.5 else -1.0) * rng.uniform(lo, hi)
        return np.array([x, y, _height(rng, bound, config, config.room_half_size)])

    return sample


def _wall_centre(config: SyntheticSceneConfig) -> CentreSampler:
    """Between the camera plane and the +x wall: bounding spheres 1.0 in front of the plane and 0.2 before the wall,
    across the camera patch widened by 1.0 on either side (where the cameras look)."""
    h = config.room_half_size
    plane = h - config.wall_distance

    def sample(rng: np.random.Generator, bound: float) -> Optional[np.ndarray]:
        lo, hi = plane + 1.0 + bound, h - 0.2 - bound
        if hi < lo:
            return None
        side = min(config.wall_patch_half_width + 1.0, h - 0.2 - bound)
        x, y = rng.uniform(lo, hi), rng.uniform(-side, side)
        return np.array([x, y, _height(rng, bound, config, h)])

    return sample


def _place_objects(
    rng: np.random.Generator, kinds: Sequence[str], shrink: float, centre_of: CentreSampler
) -> Optional[List[Tuple[str, np.ndarray, np.ndarray]]]:
    """One try at placing objects (kind, centre, size) with separated bounding spheres; None if crowded.

    ``centre_of`` draws each centre where the layout wants its objects (``_disc_centre``, ...)."""
    placed: List[Tuple[str, np.ndarray, np.ndarray]] = []
    bounds: List[float] = []
    for kind in kinds:
        for _ in range(100):
            size = shrink * (np.full(3, rng.uniform(0.3, 0.6)) if kind == "sphere" else rng.uniform(0.25, 0.55, size=3))
            bound = float(size[0] if kind == "sphere" else np.linalg.norm(size))
            centre = centre_of(rng, bound)
            if centre is None:
                continue
            if all(np.linalg.norm(centre - c) > bound + b + 0.1 for (_, c, _), b in zip(placed, bounds)):
                placed.append((kind, centre, size))
                bounds.append(bound)
                break
        else:
            return None
    return placed


def build_scene(config: SyntheticSceneConfig) -> Scene:
    """The room and randomly placed, non-overlapping central objects (deterministic given the seed).

    Orbit: object centres lie within a cylinder around the z axis and every object stays at least 0.9 world
    units inside the camera ring, so no camera is inside or touching an object and all views see them.
    Inside-out: the objects stand aside, in an annulus between the cameras' disc (at least 1.2 world units
    beyond it) and the walls (at least 0.2 inside them), so they never block a camera or contain one.
    Corridor: the room is a long box; the objects stand against the side walls, at least 0.6 beyond the cameras'
    band around the middle line. Wall: the objects, at 0.75 of the others' size, stand between the camera plane (at
    least 1.0 in front of it) and the wall the cameras look at (at least 0.2 before it), where the cameras look.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    extents, size = None, 1.0
    if config.layout == "corridor":
        centre_of, where = _corridor_centre(config), "against the corridor's side walls"
        extents = (config.corridor_half_length, config.corridor_half_width, config.room_half_size)
    elif config.layout == "wall":
        centre_of, where = _wall_centre(config), "between the cameras and the wall"
        size = 0.75  # near the cameras: smaller objects, so that the wall fills most of every view
    else:
        min_reach = None
        if config.layout == "inside-out":
            min_reach, max_reach = config.inside_out_radius + 1.2, config.room_half_size - 0.2  # see validate_config
        else:
            max_reach = min(1.6, config.camera_radius - config.camera_radius_jitter - 0.9)  # >= 1.1 (validate_config)
        centre_of, where = _disc_centre(max_reach, min_reach), f"inside radius {max_reach:.2f}"
    kinds = ["sphere"] * config.num_spheres + ["box"] * config.num_boxes
    placed = None
    for attempt in range(1000):  # crowded configs (tight ring, many objects) get smaller objects
        placed = _place_objects(rng, kinds, shrink=size * 0.9 ** (attempt // 50), centre_of=centre_of)
        if placed is not None:
            break
    if placed is None:
        raise ValueError(f"cannot place {len(kinds)} separated objects {where}; use fewer")
    spheres = [(c, s[0]) for kind, c, s in placed if kind == "sphere"]
    boxes = [(c, s) for kind, c, s in placed if kind == "box"]
    return Scene.create(
        config.room_half_size,
        [c for c, _ in spheres],
        [r for _, r in spheres],
        [c for c, _ in boxes],
        [s for _, s in boxes],
        seed=config.seed,
        texture_scale=config.texture_scale,
        room_half_extents=extents,
    )


def cast_rays(origins: np.ndarray, directions: np.ndarray, scene: Scene) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray: distance t along the (unit) direction, geometric normal, material id.

    ``origins`` is (3,) or (N, 3) and must lie inside the room and outside the objects, so every ray hits
    something (a room face at the latest).
    """
    d = directions
    o = np.broadcast_to(origins, d.shape)
    n = len(d)
    h = scene.half_sizes()  # a float for the cube, as it always was; (3,) per-axis for a box room
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        # Room (ray leaves the box from inside): per-axis exit distance, take the smallest.
        t_axes = (np.sign(d) * h - o) * inv
        t_axes = np.where(d == 0.0, np.inf, t_axes)
        axis = np.argmin(t_axes, axis=1)
        t_best = t_axes[np.arange(n), axis]
        material = 2 * axis + (d[np.arange(n), axis] > 0)
        normal = np.zeros_like(d)
        normal[np.arange(n), axis] = -np.sign(d[np.arange(n), axis])

        for k, (c, r) in enumerate(zip(scene.sphere_centers, scene.sphere_radii)):
            oc = o - c
            b = np.sum(d * oc, axis=1)
            disc = b * b - (np.sum(oc * oc, axis=1) - r * r)
            sq = np.sqrt(np.maximum(disc, 0.0))
            t = np.where(-b - sq > 1e-9, -b - sq, -b + sq)
            hit = (disc >= 0.0) & (t > 1e-9) & (t < t_best)
            t_best = np.where(hit, t, t_best)
            material = np.where(hit, NUM_ROOM_FACES + k, material)
            p = o + t[:, None] * d
            normal = np.where(hit[:, None], (p - c) / r, normal)

        first_box = NUM_ROOM_FACES + len(scene.sphere_radii)
        for k, (c, s) in enumerate(zip(scene.box_centers, scene.box_half_sizes)):
            t1 = (c - s - o) * inv
            t2 = (c + s - o) * inv
            t_lo = np.where(np.isnan(t1), -np.inf, np.minimum(t1, t2))
            t_hi = np.where(np.isnan(t1), np.inf, np.maximum(t1, t2))
            t_near, t_far = t_lo.max(axis=1), t_hi.min(axis=1)
            t = np.where(t_near > 1e-9, t_near, t_far)
            hit = (t_far >= t_near) & (t > 1e-9) & (t < t_best)
            t_best = np.where(hit, t, t_best)
            material = np.where(hit, first_box + k, material)
            box_axis = np.argmax(t_lo, axis=1)
            box_normal = np.zeros_like(d)
            box_normal[np.arange(n), box_axis] = -np.sign(d[np.arange(n), box_axis])
            normal = np.where(hit[:, None], box_normal, normal)
    return t_best, normal, material.astype(np.int64)


def surface_distance(points: np.ndarray, scene: Scene) -> np.ndarray:
    """Unsigned distance of (N, 3) points (inside the room) to the nearest scene surface."""
    dist = np.min(scene.half_sizes() - np.abs(points), axis=1)
    dist = np.abs(dist)
    for c, r in zip(scene.sphere_centers, scene.sphere_radii):
        dist = np.minimum(dist, np.abs(np.linalg.norm(points - c, axis=1) - r))
    for c, s in zip(scene.box_centers, scene.box_half_sizes):
        q = np.abs(points - c) - s
        sdf = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
        dist = np.minimum(dist, np.abs(sdf))
    return dist


def inside_objects(points: np.ndarray, scene: Scene) -> np.ndarray:
    """Whether each of the (N, 3) points lies inside a sphere or a box (where no camera may be)."""
    inside = np.zeros(len(points), dtype=bool)
    for c, r in zip(scene.sphere_centers, scene.sphere_radii):
        inside |= np.linalg.norm(points - c, axis=1) < r
    for c, s in zip(scene.box_centers, scene.box_half_sizes):
        inside |= np.all(np.abs(points - c) < s, axis=1)
    return inside
