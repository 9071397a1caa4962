"""Rendering a view by analytic ray casting in numpy: Lambertian shading, camera response, sensor noise."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from crossfire_ns.geometry import opengl_to_opencv_c2w
from crossfire_ns.synthetic.config import Lighting, PinholeIntrinsics
from crossfire_ns.synthetic.geometry import Scene, cast_rays
from crossfire_ns.synthetic.textures import solid_albedo


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
    c2w_cv = opengl_to_opencv_c2w(np.asarray(c2w, dtype=np.float64))
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
        albedo[sel] = solid_albedo(points[sel], scene.materials[m])
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
