"""Sub-pixel alignment of training-image patches in the query by normalised cross-correlation (NCC).

The CNN's features put a query's matches up to a few tenths of a pixel off, by the same amount across the image
(a per-query bias of the features under a lighting change); PnP turns such a shift into
rotation. NCC of grey-level patches is invariant to gain and offset and has no such bias, so once the pose is
within a pixel or two, each trusted index cell's patch of its training image is warped into the query (through
the plane at the cell's 3D point facing the training camera: exact on planes, second order elsewhere) and searched
for in a small window of the query; its peak, refined to sub-pixel by a parabola, is the cell's match.

Poses are OpenCV world-to-camera ``(R, t)``; pixels follow ``K``'s convention (nerfstudio: centres at +0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from crossfire_ns.geometry import project_points
from crossfire_ns.localize.matching import window_peak
from crossfire_ns.texture import local_std


@dataclass
class PatchConfig:
    """Grey-level patches: how the patch rounds align them in a query, and (the first four settings) how the map
    index places its points by aligning them between training images; one config, shared by both."""

    radius_px: int = 4
    """Half-size of the square patch compared (4: 9 x 9 pixels)."""
    smoothing_px: float = 1.0
    """Gaussian blur of both images before comparing (takes out sensor noise)."""
    min_contrast: float = 0.02
    """Patches with less grey-level standard deviation (0-1) are not searched."""
    min_ncc: float = 0.8
    """Peak normalised cross-correlation a patch needs to count as found."""
    rounds: int = 2
    """Patch rounds after the refinement rounds (0: none)."""
    search_px: Tuple[int, ...] = (2, 1)
    """Search distance of each round in query pixels (the last repeats)."""
    max_cells: int = 800
    """Patches searched per round at most, spread evenly over the views."""
    reprojection_threshold_px: float = 1.0
    """PnP inlier threshold of the patch rounds, in query pixels."""
    min_share: float = 0.15
    """A round finding fewer of its patches keeps the pose it started from."""


def _sample(grey: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bicubic samples of an (H, W) image at (..., 2) pixels (x, y; centres at +0.5); NaN outside the image."""
    height, width = grey.shape
    grid = torch.stack([2 * pixels[..., 0] / width - 1, 2 * pixels[..., 1] / height - 1], dim=-1)
    flat = grid.reshape(1, 1, -1, 2).to(grey.dtype)
    values = F.grid_sample(grey[None, None], flat, mode="bicubic", align_corners=False)[0, 0, 0]
    inside = (pixels[..., 0] >= 0.5) & (pixels[..., 0] <= width - 0.5)
    inside &= (pixels[..., 1] >= 0.5) & (pixels[..., 1] <= height - 0.5)
    return values.reshape(pixels.shape[:-1]).masked_fill(~inside, float("nan"))


def _offsets(radius: int) -> torch.Tensor:
    """(k * k, 2) integer (x, y) offsets of a square of side k = 2 radius + 1, row-major."""
    steps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)


def warped_templates(
    grey: torch.Tensor,
    K_view: np.ndarray,
    R_view: np.ndarray,
    t_view: np.ndarray,
    points: np.ndarray,
    K_query: np.ndarray,
    R_query: np.ndarray,
    t_query: np.ndarray,
    pixels: np.ndarray,
) -> torch.Tensor:
    """How the training view's neighbourhood of each 3D point looks from the query camera ``(R_query, t_query)``.

    Each query pixel of ``pixels`` (N, M, 2) is cast onto the plane through its point that faces the training camera
    (exact on planes, second order elsewhere), and the training image ``grey`` (H, W) is sampled (bicubic) where that
    plane point projects into the view. Returns (N, M) samples, NaN where the view does not see the plane point."""
    points = np.asarray(points, dtype=np.float64)
    rays = np.concatenate([pixels, np.ones(pixels.shape[:2] + (1,))], axis=-1) @ np.linalg.inv(K_query).T
    directions = rays @ R_query  # world directions (R^T d per row)
    origin = -R_query.T @ np.asarray(t_query).reshape(3)
    view_centre = -R_view.T @ np.asarray(t_view).reshape(3)
    normals = view_centre[None] - points
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    along = np.einsum("nd,nkd->nk", normals, directions)
    depth = np.einsum("nd,nd->n", normals, points - origin)[:, None] / np.where(np.abs(along) > 1e-12, along, 1e-12)
    on_plane = origin[None, None] + depth[..., None] * directions
    in_view = project_points(on_plane.reshape(-1, 3), K_view, R_view, t_view)[0].reshape(pixels.shape)
    values = _sample(grey, torch.from_numpy(in_view).float())
    return values.masked_fill(torch.from_numpy(depth <= 0), float("nan"))


def _normalised(patches: torch.Tensor) -> torch.Tensor:
    """(..., k * k) patches -> zero-mean, unit-norm patches (their dot product is the NCC)."""
    centred = patches - patches.mean(dim=-1, keepdim=True)
    return centred / centred.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _gather(columns: torch.Tensor, size: Tuple[int, int], corner: torch.Tensor, shifts: torch.Tensor, radius: int):
    """The (2 radius + 1)^2 pixels around integer (col, row) ``corner`` (N, 2) + each of ``shifts`` (S, 2) of an image
    of ``size`` (H, W) unfolded into ``columns`` (M, H * W) -> ((N, S, M) values, (N,) every patch inside the image).
    No interpolation: the query's noise stays as it was taken."""
    height, width = size
    where = corner[:, None] + shifts[None]  # (N, S, 2)
    col, row = where[..., 0], where[..., 1]
    inside = (col >= radius) & (col < width - radius) & (row >= radius) & (row < height - radius)
    flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).reshape(-1)
    return columns[:, flat].T.reshape(where.shape[:2] + (columns.shape[0],)), inside.all(1)


def align_patches(
    query_grey: torch.Tensor,
    view_grey: torch.Tensor,
    K_view: np.ndarray,
    R_view: np.ndarray,
    t_view: np.ndarray,
    points: np.ndarray,
    K_query: np.ndarray,
    R_query: np.ndarray,
    t_query: np.ndarray,
    radius: int,
    search_radius: int,
    refinements: int = 2,
) -> Tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Where each 3D point's training patch lies in the query, by normalised cross-correlation (NCC).

    The search starts where ``(R_query, t_query)`` projects the point. Each step warps the training patch
    (``warped_templates``, (2 radius + 1)^2 pixels) to the current match hypothesis and compares it with the query's
    own pixels (no interpolation of the query, whose noise would otherwise be smoothed differently at each shift)
    at integer shifts within ``search_radius`` (later steps: 1) of it; the peak, refined by a parabola along x and y,
    moves the hypothesis. ``refinements`` further steps centre the template on the last hypothesis: a parabola
    through samples off-centre from the true peak is biased towards the nearest sample.

    Returns ((N, 2) float64 query pixels of the matches, (N,) their NCC, (N,) whether every step found its peak
    inside its window (not on its edge) with the patch in the image and seen by the view)."""
    predicted = project_points(points, K_query, R_query, t_query)[0]
    offsets = _offsets(radius)  # (M, 2)
    side = 2 * radius + 1
    columns = F.unfold(query_grey[None, None], side, padding=radius)[0]  # (M, H * W): one patch per pixel, once
    hypothesis = torch.from_numpy(predicted)
    ok = torch.ones(len(points), dtype=torch.bool)
    for step in range(1 + refinements):
        window = search_radius if step == 0 else 1
        corner = torch.floor(hypothesis).long()  # the pixel the hypothesis falls in (centre at +0.5)
        centre = corner.double() + 0.5
        # the template at the query's pixel centres around the hypothesis, as the prediction's frame sees them
        where = centre[:, None] + offsets[None] - (hypothesis - torch.from_numpy(predicted))[:, None]
        templates = warped_templates(view_grey, K_view, R_view, t_view, points, K_query, R_query, t_query,
                                     where.numpy())  # fmt: skip
        seen = ~torch.isnan(templates).any(dim=1)
        template = _normalised(torch.nan_to_num(templates))
        shifts = _offsets(window).long()  # (S, 2)
        patches, inside = _gather(columns, tuple(query_grey.shape), corner, shifts, radius)
        candidate = _normalised(patches.float())
        scores = torch.einsum("nm,nsm->ns", template, candidate)  # (N, S)
        score, best = scores.max(dim=1)
        width = 2 * window + 1
        dx, dy, interior = window_peak(scores, best, width)
        ok &= seen & inside & interior
        peak = torch.stack([best % width - window + dx, best // width - window + dy], dim=-1)
        hypothesis = hypothesis + peak.double()
    return hypothesis.numpy(), score, ok


def local_contrast(grey: torch.Tensor, radius: int) -> torch.Tensor:
    """(H, W) grey-level standard deviation over the (2 radius + 1)^2 square around each pixel of ``grey`` (H, W):
    flat patches carry no position, and the richest patches are the ones worth searching for."""
    return local_std(grey[None, None].double(), radius)[0, 0].float()


def smoothed_grey(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(H, W, 3|4) float image in [0, 1] -> (H, W) grey levels blurred by a Gaussian of ``sigma`` pixels (0: none)."""
    grey = image[..., :3].float().mean(-1)
    if sigma <= 0:
        return grey
    radius = max(1, int(np.ceil(3 * sigma)))
    return gaussian_blur2d(grey[None, None], (2 * radius + 1, 2 * radius + 1), (sigma, sigma), "replicate")[0, 0]
