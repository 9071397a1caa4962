"""Index points placed by grey-level patches: each textured cell is aligned by NCC in the overlapping training images.

The patch rounds (``patch_alignment``) find a cell's training patch in the query to a tenth of a pixel, and PnP then
trusts the cell's 3D point as much. Points triangulated from the CNN's matches are still a few per cent off along
their rays where the map is weak, and the patch rounds are only as precise as those points. So the same alignment,
run between training images whose poses are known, moves each point along its own ray to the distance that explains
where its patch lies in its neighbours: the structure-based peer's triangulation, with the map's depth as the seed.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from crossfire_ns.geometry import (
    distances_along_rays,
    inside_image,
    opengl_c2w_to_opencv_w2c,
    project_points,
    scale_intrinsics,
)
from crossfire_ns.localize.patch_alignment import align_patches, local_contrast, smoothed_grey


def training_greys(crossfire_map, radius: int, sigma: float) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per training image, its (H, W) grey levels smoothed by ``sigma`` pixels and their patch contrast over
    (2 radius + 1)^2 pixels (``local_contrast``); made once per map and setting (``crossfire_map.cached``)."""

    def build():
        greys = [smoothed_grey(image, sigma) for image in crossfire_map.training_images()]
        return [(grey, local_contrast(grey, radius)) for grey in greys]

    return crossfire_map.cached(("training_grey", radius, sigma), build)


def view_greys(crossfire_map, index, radius: int, sigma: float) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """``training_greys`` followed by the same of ``index``'s virtual views (their rendered colour): one per index
    view, made once per map, index and setting."""
    greys = training_greys(crossfire_map, radius, sigma)
    if not index.virtual_rgb:
        return greys

    def build():
        rendered = [smoothed_grey(rgb.float().div(255.0), sigma) for rgb in index.virtual_rgb]
        return greys + [(grey, local_contrast(grey, radius)) for grey in rendered]

    # cached beside the index itself (same map, same lifetime): id() names that cached object
    return crossfire_map.cached(("view_grey", id(index), radius, sigma), build)


def view_camera(index, view: int, grey: torch.Tensor):
    """(K at the grey image's resolution, R, t) of training ``view`` (OpenCV), and the (sx, sy) pixel scale."""
    width, height = (float(x) for x in index.sizes[view])
    sx, sy = grey.shape[1] / width, grey.shape[0] / height
    return (scale_intrinsics(index.Ks[view], sx, sy), *opengl_c2w_to_opencv_w2c(index.c2ws[view])), (sx, sy)


def cell_contrast(pixels: np.ndarray, contrast: torch.Tensor, scale) -> np.ndarray:
    """(N,) patch contrast (``local_contrast`` map (H, W)) at cells' (N, 2) training pixels scaled by ``scale``
    (sx, sy) to the grey image (the pixel each falls in, clipped to the image)."""
    at = pixels * np.asarray(scale)
    col = np.clip(at[:, 0].astype(np.int64), 0, contrast.shape[1] - 1)
    row = np.clip(at[:, 1].astype(np.int64), 0, contrast.shape[0] - 1)
    return contrast[torch.from_numpy(row), torch.from_numpy(col)].numpy()


def patch_triangulated_points(
    index,
    greys: Sequence[Tuple[torch.Tensor, torch.Tensor]],
    radius: int,
    min_contrast: float,
    min_ncc: float,
    num_views: int,
    search_px: int,
    max_error_px: float,
    min_views: int,
    max_sigma: float,
    max_angle_deg: Optional[float] = None,
    progress: Callable[[range], Iterable[int]] = lambda views: views,
) -> Tuple[List[torch.Tensor], int]:
    """Each index view's (M, 3) points, those of its textured cells moved along their rays by NCC triangulation.

    For view v's cells whose patch contrast is at least ``min_contrast``, the patch of v's grey image
    (``greys[v]``, ``training_greys``) is searched (``align_patches``, within ``search_px`` of where the current point
    projects) in the ``num_views`` training views that see most of the index's cells from v's pose (counting only
    cells they see within ``max_angle_deg`` of v's line of sight, ``MapIndex.overlapping_views``); matches under
    ``min_ncc`` are dropped; then ``distances_along_rays`` with ``max_error_px``. A point moves when at least
    ``min_views`` matches agree with it and its distance is uncertain by at most ``max_sigma`` of itself for matches
    good to a tenth of a pixel; other points stay as they were. ``index`` is a ``map_index.MapIndex``; ``progress``
    wraps the loop over its views (a progress bar).

    Returns (points per view, how many points moved)."""
    out, moved = [], 0
    for v in progress(range(len(index.views))):
        cells = index.views[v]
        points = cells.points.numpy().astype(np.float64)
        out.append(cells.points)
        grey, contrast = greys[v]
        camera, scale = view_camera(index, v, grey)
        rich = np.flatnonzero(cell_contrast(cells.pixels.numpy(), contrast, scale) >= min_contrast)
        if len(rich) == 0:
            continue
        origin = -camera[1].T @ camera[2]
        seed = points[rich]
        distance = np.linalg.norm(seed - origin, axis=1)
        rays = (seed - origin) / np.maximum(distance, 1e-12)[:, None]
        size = tuple(index.sizes[v])
        ranked = index.overlapping_views(index.c2ws[v], index.Ks[v], size, num_views + 1, max_angle_deg)
        others = [j for j in ranked if j != v]
        others = others[:num_views]
        observed = np.full((len(rich), len(others), 2), np.nan)
        cameras = []
        for a, j in enumerate(others):
            other = greys[j][0]
            K, R, t = view_camera(index, j, other)[0]
            cameras.append((K, R, t))
            pixels, cam = project_points(seed, K, R, t)
            margin = radius + search_px + 2
            inside = np.flatnonzero(inside_image(pixels, cam[:, 2] > 0, other.shape[1], other.shape[0], margin))
            if len(inside) == 0:
                continue
            xy, score, ok = align_patches(other, grey, *camera, seed[inside], K, R, t, radius, search_px)
            ok = (ok & (score >= min_ncc)).numpy()
            observed[inside[ok], a] = xy[ok]
        distance, inlier, information = distances_along_rays(origin, rays, distance, observed, cameras, max_error_px)
        sigma = 0.1 / np.sqrt(np.maximum(information, 1e-12)) / distance
        good = (inlier.sum(1) >= min_views) & (sigma <= max_sigma)
        if good.any():
            points[rich[good]] = origin + rays[good] * distance[good, None]
            out[-1] = torch.from_numpy(points.astype(np.float32))
            moved += int(good.sum())
    return out, moved
