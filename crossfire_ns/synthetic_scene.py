"""A small bundled synthetic scene: posed training views plus held-out queries under changed lighting.

The scene is a closed room (axis-aligned box) with a few spheres and boxes in the middle, rendered by
analytic ray casting in numpy. Every surface carries a *solid* procedural texture (evaluated at the 3D hit
point, so it is consistent across views by construction) made of multi-octave coloured value noise plus
sharp features (a mosaic of cells, discs, bullseyes, striped and chequered patches) so that every small patch
is distinctive at several scales: good for feature matching, and learnable by a NeRF in minutes on CPU.

Conventions:

* World frame: right-handed, **+z is up**; the room is centred at the origin.
* Poses in ``transforms.json`` are camera-to-world in the OpenGL convention (x right, y up, the camera
  looks along -z), as nerfstudio expects. ``opengl_to_opencv`` converts them for projection.
* Intrinsics follow nerfstudio: pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)``, ``cx = w / 2``.
* Depth returned by ``render_view`` is z-depth along the optical axis (OpenCV camera z) at pixel centres.

Training views and queries differ only in lighting (light position and colour, exposure, colour cast,
gamma and sensor noise); the geometry and textures are identical, so ground-truth depth is identical too.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tyro
from PIL import Image

GENERATOR_VERSION = "1.0.0"
"""Bumped whenever the rendered pixels or poses for a given config would change."""

WORLD_UP = (0.0, 0.0, 1.0)
"""The world's up axis (+z): cameras are upright with respect to it."""

NUM_ROOM_FACES = 6
"""Material ids 0..5 are the room faces (-x, +x, -y, +y, -z floor, +z ceiling); objects follow."""


@dataclass
class SyntheticSceneConfig:
    """What to generate; the same config and seed give byte-identical output."""

    width: int = 160
    """Image width in pixels (small, so a NeRF trains in minutes on CPU)."""
    height: int = 120
    """Image height in pixels."""
    num_train: int = 40
    """Number of training views on the camera ring (enough azimuth coverage for a NeRF)."""
    num_query: int = 10
    """Number of held-out query views, placed between training azimuths, rendered under changed lighting."""
    fov_x_deg: float = 60.0
    """Horizontal field of view in degrees; fl_y = fl_x (square pixels)."""
    seed: int = 0
    """Seeds object placement, textures, camera poses and query sensor noise."""
    supersample: int = 2
    """Anti-aliasing: render supersample x supersample rays per pixel and box-average them."""
    room_half_size: float = 4.0
    """Half the side of the cubic room (world units); the walls are the far background of every view."""
    camera_radius: float = 2.5
    """Mean horizontal distance of the cameras from the room's vertical axis."""
    camera_radius_jitter: float = 0.15
    """Cameras' distance from the axis varies uniformly by +/- this, so views are not on one circle."""
    camera_height_min: float = -0.3
    """Lowest camera height (z), so that views see the objects from varied elevations."""
    camera_height_max: float = 0.8
    """Highest camera height (z)."""
    target_jitter: float = 0.15
    """Std of the random offset (world units) of each camera's look-at target around the origin."""
    roll_jitter_deg: float = 2.0
    """Cameras roll uniformly by +/- this many degrees, so poses are not all perfectly upright."""
    num_spheres: int = 3
    """Number of textured spheres in the middle (parallax against the walls)."""
    num_boxes: int = 2
    """Number of textured axis-aligned boxes in the middle."""
    texture_scale: float = 1.0
    """Size of texture features (larger: coarser patterns, which a small NeRF learns faster)."""
    arc_deg: float = 360.0
    """Azimuth range of the camera ring: 360 orbits the objects; less is a denser capture of one side."""


@dataclass(frozen=True)
class PinholeIntrinsics:
    """Pinhole intrinsics in nerfstudio's convention (pixel centres at +0.5)."""

    fx: float
    """Focal length along x, in pixels."""
    fy: float
    """Focal length along y, in pixels."""
    cx: float
    """Principal point x (w / 2 for a centred principal point)."""
    cy: float
    """Principal point y (h / 2)."""
    width: int
    """Image width in pixels."""
    height: int
    """Image height in pixels."""

    @staticmethod
    def from_fov(width: int, height: int, fov_x_deg: float) -> "PinholeIntrinsics":
        """Square pixels and a centred principal point: the exact intrinsics the renderer uses."""
        fx = (width / 2.0) / math.tan(math.radians(fov_x_deg) / 2.0)
        return PinholeIntrinsics(fx=fx, fy=fx, cx=width / 2.0, cy=height / 2.0, width=width, height=height)

    def matrix(self) -> np.ndarray:
        """The 3x3 K matrix (OpenCV convention)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_transforms(self) -> dict:
        """The intrinsics keys of a nerfstudio ``transforms.json`` (OPENCV model, zero distortion)."""
        return {
            "camera_model": "OPENCV",
            "fl_x": self.fx,
            "fl_y": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "w": self.width,
            "h": self.height,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
        }


@dataclass(frozen=True)
class Lighting:
    """Lambertian shading by ambient light plus one point light, then a simple camera response.

    pixel = (exposure * color_gain * albedo * (ambient + diffuse * light_color * max(0, n.l) * falloff))
    ** (1 / gamma) + noise, with falloff = 1 / (1 + (distance / falloff_distance)^2).
    """

    light_position: Tuple[float, float, float]
    """Point light position (world units), inside the room."""
    light_color: Tuple[float, float, float]
    """RGB colour of the point light."""
    ambient: float
    """Ambient term, so that surfaces facing away from the light are not black (no shadows are cast)."""
    diffuse: float
    """Strength of the point light."""
    falloff_distance: float
    """Distance at which the point light's irradiance has halved."""
    exposure: float
    """Global exposure multiplier (linear)."""
    color_gain: Tuple[float, float, float]
    """Per-channel gain: a white-balance / colour cast."""
    gamma: float
    """Encoding gamma: the linear value x is written as x ** (1 / gamma)."""
    noise_std: float
    """Std of additive Gaussian sensor noise on the encoded [0, 1] values (0 = clean)."""


TRAIN_LIGHTING = Lighting(
    light_position=(1.5, -1.0, 3.0),
    light_color=(1.0, 1.0, 1.0),
    ambient=0.4,
    diffuse=1.5,
    falloff_distance=5.0,
    exposure=1.45,
    color_gain=(1.0, 1.0, 1.0),
    gamma=1.3,
    noise_std=0.0,
)
"""Lighting of the training views: a white light above, neutral camera, no noise."""

QUERY_LIGHTING = Lighting(
    light_position=(-2.5, 2.0, 0.5),
    light_color=(1.0, 0.85, 0.6),
    ambient=0.3,
    diffuse=1.8,
    falloff_distance=5.0,
    exposure=1.15,
    color_gain=(1.15, 0.95, 0.75),
    gamma=1.8,
    noise_std=0.015,
)
"""Lighting of the queries: a warm, lower light on the opposite side of the room, less ambient light,
a darker exposure, a warm colour cast, a different gamma and mild sensor noise."""


@dataclass(frozen=True)
class Material:
    """Parameters of one surface's solid texture: where it samples the shared procedural patterns."""

    salt: int
    """Hash salt: different salts give unrelated patterns."""
    rotation: np.ndarray
    """3x3 rotation applied to world points first, so pattern grids are not aligned with the walls."""
    offset: np.ndarray
    """Offset (texture units) added after rotation and scaling."""
    scale: float
    """World units per texture unit: smaller means finer texture (used for the nearer objects)."""
    tint: np.ndarray
    """RGB tint of the noise base, so that each surface has its own overall colour."""


@dataclass(frozen=True, eq=False)
class Scene:
    """The analytic geometry and materials; material ids: room faces 0..5, then spheres, then boxes."""

    room_half_size: float
    """The room is the cube [-room_half_size, room_half_size]^3."""
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

    @staticmethod
    def create(
        room_half_size: float,
        sphere_centers: Sequence[Sequence[float]] = (),
        sphere_radii: Sequence[float] = (),
        box_centers: Sequence[Sequence[float]] = (),
        box_half_sizes: Sequence[Sequence[float]] = (),
        seed: int = 0,
        texture_scale: float = 1.0,
    ) -> "Scene":
        """A scene from explicit geometry, with random (seeded) materials; useful for tests."""
        spheres_c = np.asarray(sphere_centers, dtype=np.float64).reshape(-1, 3)
        boxes_c = np.asarray(box_centers, dtype=np.float64).reshape(-1, 3)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        n_objects = len(spheres_c) + len(boxes_c)
        materials = tuple(
            _random_material(
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
        )

    def bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box of all geometry (that is, of the room)."""
        h = self.room_half_size
        return np.full(3, -h), np.full(3, h)

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


# ----------------------------------------------------------------------------------------------------------
# Hashing and procedural patterns (all vectorised over points)
# ----------------------------------------------------------------------------------------------------------

_U64 = np.uint64
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_PRIME = (_U64(0x9E3779B97F4A7C15), _U64(0xC2B2AE3D27D4EB4F), _U64(0x165667B19E3779F9))
_STREAM = tuple(_U64((k * 0x9E3779B97F4A7C15) % (1 << 64)) for k in range(8))
_MASK21 = _U64((1 << 21) - 1)
_INV21 = 1.0 / (1 << 21)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: turns structured integers into well-spread 64-bit hashes (wrapping arithmetic)."""
    h = h ^ (h >> _U64(30))
    h = h * _MIX1
    h = h ^ (h >> _U64(27))
    h = h * _MIX2
    return h ^ (h >> _U64(31))


def _cell_hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int) -> np.ndarray:
    """A 64-bit hash per integer lattice cell (int64 arrays), decorrelated across salts."""
    h = ix.view(_U64) * _PRIME[0] ^ iy.view(_U64) * _PRIME[1] ^ iz.view(_U64) * _PRIME[2]
    return _mix(h ^ _mix(np.full(1, salt, dtype=np.int64).view(_U64)))


def _hash_floats(h: np.ndarray, count: int) -> np.ndarray:
    """(N, count) uniform floats in [0, 1) from per-point hashes, 3 per 64-bit hash (21 bits each)."""
    cols = []
    for k in range((count + 2) // 3):
        hk = h if k == 0 else _mix(h + _STREAM[k])
        for j in range(3):
            cols.append(((hk >> _U64(21 * j)) & _MASK21).astype(np.float64) * _INV21)
    return np.stack(cols[:count], axis=1)


def _cells(q: np.ndarray, size: float) -> Tuple[np.ndarray, np.ndarray]:
    """Integer cell index (N, 3) int64 and position inside the cell in [0, 1)^3 for cells of ``size``."""
    s = q / size
    i = np.floor(s)
    return i.astype(np.int64), s - i


def _value_noise_rgb(q: np.ndarray, salt: int) -> np.ndarray:
    """Smooth RGB value noise with unit lattice spacing: trilinear (smoothstep) blend of corner colours."""
    idx, f = _cells(q, 1.0)
    w = f * f * (3.0 - 2.0 * f)
    ix, iy, iz = (np.ascontiguousarray(idx[:, k]) for k in range(3))
    out = np.zeros_like(q)
    for dx in (0, 1):
        wx = w[:, 0] if dx else 1.0 - w[:, 0]
        for dy in (0, 1):
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            for dz in (0, 1):
                wz = w[:, 2] if dz else 1.0 - w[:, 2]
                h = _cell_hash(ix + dx, iy + dy, iz + dz, salt)
                out += (wx * wy * wz)[:, None] * _hash_floats(h, 3)
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; used to draw vivid random colours."""
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=1)


def _vivid(u: np.ndarray) -> np.ndarray:
    """(N, 3) uniforms -> saturated colours, either dark or bright: strong luminance edges survive colour casts."""
    value = np.where(u[:, 2] < 0.5, 0.08 + 0.5 * u[:, 2], 0.7 + 0.6 * (u[:, 2] - 0.5))
    return _hsv_to_rgb(u[:, 0], 0.55 + 0.45 * u[:, 1], value)


def _fbm_rgb(q: np.ndarray, salt: int) -> np.ndarray:
    """Multi-octave coloured value noise, contrast-stretched to roughly fill [0, 1]."""
    total = np.zeros_like(q)
    norm = 0.0
    for octave, (freq, amp) in enumerate(((0.7, 1.0), (1.6, 0.8), (3.5, 0.65), (7.5, 0.5))):
        total += amp * _value_noise_rgb(q * freq + 17.3 * octave, salt * 16 + octave)
        norm += amp
    return np.clip(0.5 + 3.2 * (total / norm - 0.5), 0.0, 1.0)


def _solid_albedo(points: np.ndarray, material: Material) -> np.ndarray:
    """(N, 3) albedo in [0, 1] of a material's solid texture at world points."""
    q = points @ material.rotation.T / material.scale + material.offset
    salt = material.salt * 64
    noise = _fbm_rgb(q, salt)
    gray = np.clip(0.5 + 1.8 * (noise.mean(axis=1, keepdims=True) - 0.5), 0.0, 1.0)
    albedo = material.tint * (0.08 + 0.92 * (0.5 * noise + 0.5 * gray))

    # Mosaic: every cell gets its own flat colour, blended in: sharp straight edges and corners everywhere.
    idx, _ = _cells(q, 0.8)
    r = _hash_floats(_cell_hash(idx[:, 0].copy(), idx[:, 1].copy(), idx[:, 2].copy(), salt + 1), 4)
    albedo = (0.6 * albedo + 0.4 * _vivid(r[:, :3])) * (0.4 + 0.6 * r[:, 3:4])

    # Chequered patches: some cells carry a small 3D checkerboard inside a cube.
    idx, f = _cells(q, 1.3)
    r = _hash_floats(_cell_hash(idx[:, 0].copy(), idx[:, 1].copy(), idx[:, 2].copy(), salt + 2), 8)
    inside = (r[:, 0] < 0.3) & np.all(np.abs(f - 0.5) < 0.2 + 0.15 * r[:, 1:2], axis=1)
    checks = np.floor(q * (5.0 + 5.0 * r[:, 2:3])).astype(np.int64).sum(axis=1) % 2 == 0
    albedo = np.where((inside & checks)[:, None], _vivid(r[:, 3:6]), albedo)
    albedo = np.where((inside & ~checks)[:, None], 0.1 + 0.8 * r[:, 6:7] * np.ones(3), albedo)

    # Striped discs: a ball per chosen cell, with stripes of random direction and frequency.
    idx, f = _cells(q, 1.7)
    r = _hash_floats(_cell_hash(idx[:, 0].copy(), idx[:, 1].copy(), idx[:, 2].copy(), salt + 3), 12)
    radius = 0.2 + 0.25 * r[:, 1]
    centre = radius[:, None] + (1.0 - 2.0 * radius[:, None]) * r[:, 2:5]
    inside = (r[:, 0] < 0.35) & (np.sum((f - centre) ** 2, axis=1) < radius**2)
    direction = r[:, 5:8] - 0.5
    direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9
    stripes = np.sin(np.sum(q * direction, axis=1) * (12.0 + 20.0 * r[:, 8])) > 0
    albedo = np.where((inside & stripes)[:, None], _vivid(r[:, 9:12]), albedo)
    albedo = np.where((inside & ~stripes)[:, None], 0.92 - 0.8 * _vivid(r[:, 9:12]), albedo)

    # Discs (and bullseyes) at three scales: sharp, coloured blobs of varied sizes.
    for layer, size, prob in ((4, 1.0, 0.55), (5, 0.35, 0.5), (6, 0.15, 0.3)):
        idx, f = _cells(q, size)
        r = _hash_floats(_cell_hash(idx[:, 0].copy(), idx[:, 1].copy(), idx[:, 2].copy(), salt + layer), 11)
        radius = 0.12 + 0.3 * r[:, 1]
        centre = radius[:, None] + (1.0 - 2.0 * radius[:, None]) * r[:, 2:5]
        dist2 = np.sum((f - centre) ** 2, axis=1)
        inside = (r[:, 0] < prob) & (dist2 < radius**2)
        albedo = np.where(inside[:, None], _vivid(r[:, 5:8]), albedo)
        ring = inside & (r[:, 8] < 0.5) & (dist2 < (0.5 * radius) ** 2)
        albedo = np.where(ring[:, None], _vivid(r[:, [9, 10, 5]]), albedo)
    return albedo


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix with sign fix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _random_material(rng: np.random.Generator, salt: int, scale: float) -> Material:
    """A material with its own pattern, orientation and tint."""
    return Material(
        salt=salt,
        rotation=_random_rotation(rng),
        offset=rng.uniform(-100.0, 100.0, size=3),
        scale=scale,
        tint=rng.uniform(0.55, 1.0, size=3),
    )


# ----------------------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------------------


def _place_objects(
    rng: np.random.Generator, kinds: Sequence[str], max_reach: float, shrink: float
) -> Optional[List[Tuple[str, np.ndarray, np.ndarray]]]:
    """One try at placing objects (kind, centre, size) with separated bounding spheres; None if crowded."""
    placed: List[Tuple[str, np.ndarray, np.ndarray]] = []
    bounds: List[float] = []
    for kind in kinds:
        for _ in range(100):
            size = shrink * (np.full(3, rng.uniform(0.3, 0.6)) if kind == "sphere" else rng.uniform(0.25, 0.55, size=3))
            bound = float(size[0] if kind == "sphere" else np.linalg.norm(size))
            ang, rad = rng.uniform(0.0, 2.0 * np.pi), (max_reach - bound) * np.sqrt(rng.uniform())
            centre = np.array([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(-0.6, 0.7)])
            if all(np.linalg.norm(centre - c) > bound + b + 0.1 for (_, c, _), b in zip(placed, bounds)):
                placed.append((kind, centre, size))
                bounds.append(bound)
                break
        else:
            return None
    return placed


def build_scene(config: SyntheticSceneConfig) -> Scene:
    """The room and randomly placed, non-overlapping central objects (deterministic given the seed).

    Object centres lie within a cylinder around the z axis and every object stays at least 0.9 world units
    inside the camera ring, so no camera is inside or touching an object and all views see them.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 1]))
    max_reach = min(1.6, config.camera_radius - config.camera_radius_jitter - 0.9)  # >= 1.1, see _validate
    kinds = ["sphere"] * config.num_spheres + ["box"] * config.num_boxes
    placed = None
    for attempt in range(1000):  # crowded configs (tight ring, many objects) get smaller objects
        placed = _place_objects(rng, kinds, max_reach, shrink=0.9 ** (attempt // 50))
        if placed is not None:
            break
    if placed is None:
        raise ValueError(f"cannot place {len(kinds)} separated objects inside radius {max_reach:.2f}; use fewer")
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
    )


def cast_rays(origins: np.ndarray, directions: np.ndarray, scene: Scene) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray: distance t along the (unit) direction, geometric normal, material id.

    ``origins`` is (3,) or (N, 3) and must lie inside the room and outside the objects, so every ray hits
    something (a room face at the latest).
    """
    d = directions
    o = np.broadcast_to(origins, d.shape)
    n = len(d)
    h = scene.room_half_size
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
    dist = np.min(scene.room_half_size - np.abs(points), axis=1)
    dist = np.abs(dist)
    for c, r in zip(scene.sphere_centers, scene.sphere_radii):
        dist = np.minimum(dist, np.abs(np.linalg.norm(points - c, axis=1) - r))
    for c, s in zip(scene.box_centers, scene.box_half_sizes):
        q = np.abs(points - c) - s
        sdf = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
        dist = np.minimum(dist, np.abs(sdf))
    return dist


# ----------------------------------------------------------------------------------------------------------
# Cameras
# ----------------------------------------------------------------------------------------------------------


def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world from OpenGL (x right, y up, looks along -z) to OpenCV (x right, y down, looks +z)."""
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[:3, 1:3] *= -1.0
    return out


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


def sample_poses(config: SyntheticSceneConfig) -> Tuple[np.ndarray, np.ndarray]:
    """(num_train, 4, 4) training and (num_query, 4, 4) query OpenGL camera-to-world poses.

    Training azimuths are evenly spaced with jitter; queries sit at midpoints between neighbouring
    training azimuths (with a little jitter), with their own random heights and radii, so they are new
    poses rather than duplicates. Training and query poses use separate random streams.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 2]))
    full_circle = config.arc_deg >= 360.0
    step = math.radians(min(config.arc_deg, 360.0)) / config.num_train
    azimuths = np.arange(config.num_train) * step + rng.uniform(-0.25, 0.25, config.num_train) * step
    train = np.stack([_ring_pose(rng, a, config) for a in azimuths]) if config.num_train else np.zeros((0, 4, 4))

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
    query = np.stack([_ring_pose(rng, a, config) for a in query_az]) if config.num_query else np.zeros((0, 4, 4))
    return train, query


# ----------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------


def pixel_rays(
    c2w: np.ndarray, intrinsics: PinholeIntrinsics, supersample: int = 1
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera centre (3,), unit world directions (H*s, W*s, 3), and each ray's camera-z per unit length.

    Sub-pixel samples sit at u + (i + 0.5) / s for i in 0..s-1, so with s = 1 rays pass through pixel
    centres (u + 0.5, v + 0.5) and, for any s, the samples of a pixel average to its centre.
    """
    s = supersample
    u = (np.arange(intrinsics.width * s) + 0.5) / s
    v = (np.arange(intrinsics.height * s) + 0.5) / s
    uu, vv = np.meshgrid(u, v)
    d_cv = np.stack([(uu - intrinsics.cx) / intrinsics.fx, (vv - intrinsics.cy) / intrinsics.fy, np.ones_like(uu)], -1)
    norm = np.linalg.norm(d_cv, axis=-1, keepdims=True)
    c2w_cv = opengl_to_opencv(np.asarray(c2w, dtype=np.float64))
    dirs = (d_cv / norm) @ c2w_cv[:3, :3].T
    return c2w_cv[:3, 3].copy(), dirs, 1.0 / norm[..., 0]


def _shade(points: np.ndarray, normals: np.ndarray, albedo: np.ndarray, lighting: Lighting) -> np.ndarray:
    """Linear Lambertian radiance: ambient + point light with a soft distance falloff."""
    to_light = np.asarray(lighting.light_position) - points
    dist = np.linalg.norm(to_light, axis=1)
    cos = np.maximum(np.sum(normals * to_light, axis=1) / np.maximum(dist, 1e-9), 0.0)
    falloff = 1.0 / (1.0 + (dist / lighting.falloff_distance) ** 2)
    irradiance = lighting.ambient + lighting.diffuse * (cos * falloff)[:, None] * np.asarray(lighting.light_color)
    return albedo * irradiance


def render_view(
    c2w: np.ndarray,
    intrinsics: PinholeIntrinsics,
    lighting: Lighting,
    scene: Scene,
    supersample: int = 2,
    noise_seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render one view: (rgb (H, W, 3) float32 in [0, 1], depth (H, W) float32).

    ``c2w`` is a 4x4 OpenGL camera-to-world. Colour is the box average of supersample^2 rays per pixel
    (in linear radiance, before the camera response). Depth is the z-depth (along the optical axis) of
    the single ray through each pixel centre, so back-projecting (u + 0.5, v + 0.5) at that depth gives
    a point exactly on a surface; it does not depend on the lighting. Noise (if the lighting has any) is
    drawn from ``noise_seed``, so rendering is a pure function of its arguments.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    w, h, s = intrinsics.width, intrinsics.height, supersample

    origin, dirs, z_per_t = pixel_rays(c2w, intrinsics, s)
    dirs = dirs.reshape(-1, 3)
    t, normal, material = cast_rays(origin, dirs, scene)
    points = origin + t[:, None] * dirs
    normal = normal * np.where(np.sum(normal * dirs, axis=1) > 0, -1.0, 1.0)[:, None]  # face the camera
    albedo = np.empty_like(points)
    for m in np.unique(material):
        sel = material == m
        albedo[sel] = _solid_albedo(points[sel], scene.materials[m])
    radiance = _shade(points, normal, albedo, lighting).reshape(h, s, w, s, 3).mean(axis=(1, 3))

    linear = np.clip(radiance * lighting.exposure * np.asarray(lighting.color_gain), 0.0, 1.0)
    rgb = linear ** (1.0 / lighting.gamma)
    if lighting.noise_std > 0:
        rng = np.random.default_rng(np.random.SeedSequence([noise_seed, 4]))
        rgb = rgb + rng.normal(0.0, lighting.noise_std, size=rgb.shape)
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32)

    if s > 1:  # depth from the one ray through each pixel centre, not an average across an edge
        origin, dirs, z_per_t = pixel_rays(c2w, intrinsics, 1)
        t = cast_rays(origin, dirs.reshape(-1, 3), scene)[0]
    depth = (t * z_per_t.reshape(-1)).reshape(h, w).astype(np.float32)
    return rgb, depth


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] float image -> 8-bit, rounding to nearest."""
    return np.clip(np.round(np.asarray(rgb) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, write: Callable[[Path], None]) -> None:
    """Write via a temporary file in the same folder, then rename: a crash never leaves a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG, written atomically."""
    image = Image.fromarray(to_uint8(rgb), mode="RGB")
    _atomic_write_bytes(path, lambda tmp: image.save(tmp, format="PNG"))


def _write_json(path: Path, payload: dict) -> None:
    """Pretty JSON, written atomically."""
    text = json.dumps(payload, indent=2) + "\n"
    _atomic_write_bytes(path, lambda tmp: tmp.write_text(text))


def _validate(config: SyntheticSceneConfig) -> None:
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
    reach = max(
        config.camera_radius + config.camera_radius_jitter,
        abs(config.camera_height_min),
        abs(config.camera_height_max),
    )
    if reach >= config.room_half_size - 0.1:
        raise ValueError(f"cameras (reach {reach}) must stay inside the room (half size {config.room_half_size})")
    if config.camera_radius - config.camera_radius_jitter < 2.0:
        raise ValueError("camera ring too small: cameras would collide with the central objects")


def generate_scene(
    output_dir: Path,
    config: Optional[SyntheticSceneConfig] = None,
    train_lighting: Lighting = TRAIN_LIGHTING,
    query_lighting: Lighting = QUERY_LIGHTING,
    on_view: Optional[Callable[[str], None]] = None,
) -> Path:
    """Render and write the scene (layout below) and return ``output_dir``.

    ``output_dir/transforms.json`` + ``images/train_XXX.png`` (training views, nerfstudio format),
    ``output_dir/queries/transforms.json`` + ``queries/images/query_XXX.png`` (ground-truth poses in the
    same world frame, changed lighting) and ``output_dir/scene.json`` (metadata). Images are written
    first and the JSON files last, each atomically, so a listed image always exists. ``on_view`` is
    called with each image's relative path after it is written (for progress reporting).
    """
    config = config if config is not None else SyntheticSceneConfig()
    _validate(config)
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    (output_dir / "queries" / "images").mkdir(parents=True, exist_ok=True)

    scene = build_scene(config)
    intrinsics = PinholeIntrinsics.from_fov(config.width, config.height, config.fov_x_deg)
    train_poses, query_poses = sample_poses(config)

    def render_set(poses: np.ndarray, lighting: Lighting, prefix: str, base: Path, stream: int) -> List[dict]:
        frames = []
        for i, c2w in enumerate(poses):
            rel = f"images/{prefix}_{i:03d}.png"
            rgb, _ = render_view(
                c2w, intrinsics, lighting, scene, config.supersample, noise_seed=_noise_seed(config, stream, i)
            )
            _write_png(base / rel, rgb)
            frames.append({"file_path": rel, "transform_matrix": c2w.tolist()})
            if on_view is not None:
                on_view(str((base / rel).relative_to(output_dir)))
        return frames

    train_frames = render_set(train_poses, train_lighting, "train", output_dir, 0)
    query_frames = render_set(query_poses, query_lighting, "query", output_dir / "queries", 1)

    _write_json(output_dir / "transforms.json", {**intrinsics.to_transforms(), "frames": train_frames})
    _write_json(output_dir / "queries" / "transforms.json", {**intrinsics.to_transforms(), "frames": query_frames})
    _write_json(
        output_dir / "scene.json",
        _metadata(config, scene, intrinsics, train_poses, query_poses, train_lighting, query_lighting),
    )
    return output_dir


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
        "generator": "crossfire_ns.synthetic_scene",
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


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------


@dataclass
class MakeSceneArgs:
    """Generate the bundled synthetic scene (training views + lighting-changed queries)."""

    output_dir: Path
    """Folder to write transforms.json, images/, queries/ and scene.json into."""
    scene: tyro.conf.OmitArgPrefixes[SyntheticSceneConfig] = field(default_factory=SyntheticSceneConfig)
    """Scene parameters."""


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Parse arguments, generate the scene with a progress bar, print a summary; returns the output dir."""
    from rich.console import Console
    from rich.progress import Progress

    args = tyro.cli(MakeSceneArgs, args=None if argv is None else list(argv))
    config = args.scene
    console = Console()
    total = config.num_train + config.num_query
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Rendering views", total=total)
        out = generate_scene(args.output_dir, config, on_view=lambda _: progress.advance(task))
    console.print(
        f"Wrote {config.num_train} training views and {config.num_query} queries "
        f"({config.width}x{config.height}, seed {config.seed}) to {out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return out


def entrypoint() -> None:
    """Console-script entry point (crossfire-make-scene)."""
    main()


if __name__ == "__main__":
    entrypoint()
