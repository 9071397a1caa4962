"""Solid procedural textures, evaluated at 3D points (so consistent across views by construction): hashing,
multi-octave coloured value noise and sharp features, vectorised over points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


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


def solid_albedo(points: np.ndarray, material: Material) -> np.ndarray:
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


def random_material(rng: np.random.Generator, salt: int, scale: float) -> Material:
    """A material with its own pattern, orientation and tint."""
    return Material(
        salt=salt,
        rotation=_random_rotation(rng),
        offset=rng.uniform(-100.0, 100.0, size=3),
        scale=scale,
        tint=rng.uniform(0.55, 1.0, size=3),
    )
