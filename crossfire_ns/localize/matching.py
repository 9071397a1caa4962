"""Descriptor matching (mutual nearest neighbours by cosine similarity) and global-descriptor retrieval."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def mutual_nearest_neighbours(
    desc_a: torch.Tensor, desc_b: torch.Tensor, min_similarity: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of L2-normalised descriptors (N, D) and (M, D) whose cosine similarity is at
    least ``min_similarity``.

    Returns ``(idx_a, idx_b, similarity)``: two long tensors and a float tensor of the same length K
    (possibly 0, also for empty inputs). Mutuality removes most ambiguous matches on repeated structure at no
    extra cost; the threshold removes confident-but-wrong ones on untextured regions.
    """
    if desc_a.ndim != 2 or desc_b.ndim != 2:
        raise ValueError(f"descriptors must be (N, D) and (M, D), got {tuple(desc_a.shape)} and {tuple(desc_b.shape)}")
    device = desc_a.device
    if len(desc_a) == 0 or len(desc_b) == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone(), torch.empty(0, dtype=desc_a.dtype, device=device)
    if desc_a.shape[1] != desc_b.shape[1]:
        raise ValueError(f"descriptor dimensions differ: {desc_a.shape[1]} vs {desc_b.shape[1]}")
    similarity = desc_a @ desc_b.to(desc_a.dtype).T
    sim, best_b = similarity.max(dim=1)  # each row's most similar column...
    best_a = similarity.argmax(dim=0)  # ...and each column's most similar row
    keep = (best_a[best_b] == torch.arange(len(desc_a), device=device)) & (sim >= min_similarity)
    idx_a = torch.nonzero(keep).reshape(-1)
    return idx_a, best_b[idx_a], sim[idx_a]


def global_descriptor(features: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """GeM pooling (generalised mean, p=3) of dense features (B, D, H, W) -> L2-normalised (B, D).

    GeM sits between average and max pooling: it favours strong, distinctive activations without being
    dominated by a single one, which makes it a robust image-level descriptor for retrieval.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, D, H, W), got {tuple(features.shape)}")
    pooled = features.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
    return F.normalize(pooled, dim=-1)


def top_k_retrieval(query: torch.Tensor, database: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices and cosine similarities of the (at most) k database rows (N, D) most similar to ``query`` (D,),
    best first."""
    if len(database) == 0 or k <= 0:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=query.dtype)
    query = F.normalize(query.reshape(1, -1).to(database.dtype), dim=-1)
    scores = (F.normalize(database, dim=-1) @ query.to(database.device).T)[:, 0]
    top = torch.topk(scores, k=min(k, len(database)))
    return top.indices, top.values


def parabola_vertex(minus: torch.Tensor, peak: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
    """Sub-sample offset (within +/- 0.5) of the vertex of the parabola through three equally spaced scores around a
    peak; 0 where they do not curve down."""
    curvature = minus - 2 * peak + plus
    shift = 0.5 * (minus - plus) / torch.where(curvature < -1e-6, curvature, torch.full_like(curvature, -1e12))
    return shift.clamp(-0.5, 0.5)


def window_peak(scores: torch.Tensor, best: torch.Tensor, side: int):
    """The sub-cell offset of each window's peak: ``scores`` (N, side * side) row-major, ``best`` (N,) the index of
    each maximum. Returns ((N,) dx, (N,) dy from the peak cell's centre, parabola along x and along y; (N,) whether the
    peak is inside the window, not on its edge, where the true peak may lie beyond it)."""
    by, bx = best // side, best % side
    interior = (bx > 0) & (bx < side - 1) & (by > 0) & (by < side - 1)
    grid = scores.reshape(-1, side, side)
    rows = torch.arange(len(grid), device=grid.device)
    bxc, byc = bx.clamp(1, side - 2), by.clamp(1, side - 2)
    dx = parabola_vertex(grid[rows, byc, bxc - 1], grid[rows, byc, bxc], grid[rows, byc, bxc + 1])
    dy = parabola_vertex(grid[rows, byc - 1, bxc], grid[rows, byc, bxc], grid[rows, byc + 1, bxc])
    return dx, dy, interior


DENSE_WINDOW_RATIO = 8
"""``guided_matches`` scores every descriptor against the whole feature map (one matrix product) when the map has
fewer cells than this many times a window's: cheaper than gathering the windows' features (the two-level search's
half-resolution level: 13 x 13 windows on 40 x 30 cells, about 4x faster on 2 CPU cores)."""
DENSE_MAX_ENTRIES = 64_000_000
"""...and the (descriptors, map cells) score matrix stays below this many entries (256 MB in float32)."""


def _far_from(k: int, device) -> torch.Tensor:
    """(k*k, k*k) bool: for a peak at each cell of a k x k window (row-major), the cells more than 3 away from it."""
    row, col = torch.arange(k, device=device).repeat_interleave(k), torch.arange(k, device=device).repeat(k)
    return (row[:, None] - row[None, :]).square() + (col[:, None] - col[None, :]).square() > 9


def guided_matches(
    descriptors: torch.Tensor,
    expected_xy: torch.Tensor,
    feature_map: torch.Tensor,
    radius: int,
    min_similarity: float,
    max_ratio: float = 0.9,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best match of each descriptor inside a window of the feature map around where it is expected.

    Once a pose is roughly right, a rendered pixel's match lies near where it was rendered, so searching a
    small window instead of the whole image removes the ambiguity of repeated texture and lets every
    distinctive pixel match (not only mutual nearest neighbours). The peak is refined to sub-cell precision
    by fitting a parabola through the similarities of its neighbours along x and along y.

    Args:
        descriptors: (N, D) L2-normalised descriptors.
        expected_xy: (N, 2) expected (x, y) position of each in feature-map cells (continuous, centres at +0.5).
        feature_map: (D, h, w) L2-normalised features.
        radius: half-size of the square search window, in cells.
        min_similarity: cosine similarity the peak must reach.
        max_ratio: the peak's distance sqrt(2 - 2 sim) must be below this fraction of the best distance
            found more than 3 cells away from it (a distinct peak, not one of many look-alikes).

    Returns:
        ``(index, xy, similarity)``: indices into ``descriptors`` of the kept matches, their (x, y) positions
        in feature-map cells (centres at +0.5, sub-cell), and the peak similarities.
    """
    dim, h, w = feature_map.shape
    k = 2 * radius + 1
    n = len(descriptors)
    centre = torch.floor(expected_xy).long()
    offsets = torch.arange(-radius, radius + 1, device=feature_map.device)
    xs, ys = centre[:, 0, None] + offsets, centre[:, 1, None] + offsets  # (N, k) each window's columns and rows
    inside = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]).reshape(n, k * k)
    where = (ys.clamp(0, h - 1)[:, :, None] * w + xs.clamp(0, w - 1)[:, None, :]).reshape(n, k * k)  # row-major
    flat = feature_map.reshape(dim, -1).T
    descriptors = descriptors.to(flat)
    if h * w < DENSE_WINDOW_RATIO * k * k and n * h * w <= DENSE_MAX_ENTRIES:
        sims = (descriptors @ flat.T).gather(1, where)  # wide windows on a small map: one product, then look up
    else:
        sims = torch.einsum("nd,nkd->nk", descriptors, flat[where])  # gather each window's features
    sims = sims.masked_fill(~inside, -2.0)
    best_sim, best = sims.max(dim=1)
    by, bx = best // k, best % k
    second = sims.masked_fill(~_far_from(k, feature_map.device)[best], -2.0).max(dim=1).values
    dist_best = (2 - 2 * best_sim).clamp(min=0).sqrt()
    dist_second = (2 - 2 * second).clamp(min=0).sqrt()
    keep = (best_sim >= min_similarity) & (dist_best < max_ratio * dist_second)
    dx, dy, interior = window_peak(sims, best, k)
    keep &= interior
    xy = torch.stack([centre[:, 0] + bx - radius + 0.5 + dx, centre[:, 1] + by - radius + 0.5 + dy], dim=-1).float()
    index = torch.nonzero(keep).reshape(-1)
    return index, xy[index], best_sim[index]


def two_level_guided_matches(
    descriptors: torch.Tensor,
    expected_xy: torch.Tensor,
    feature_map: torch.Tensor,
    radius: int,
    min_similarity: float,
    fine_radius: int = 3,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``guided_matches`` over a wide window for a fraction of its cost: the window is searched on the feature map
    pooled 2x2 (radius / 2 cells), and each peak found there again within ``fine_radius`` cells at full resolution
    (sub-pixel). About (radius + 1)^2 + (2 fine_radius + 1)^2 window cells per descriptor instead of (2 radius + 1)^2.
    Same arguments and returns as ``guided_matches``."""
    pooled = F.normalize(F.avg_pool2d(feature_map[None], 2, ceil_mode=True)[0], dim=0)
    coarse, coarse_xy, _ = guided_matches(
        descriptors, expected_xy / 2, pooled, max(1, (radius + 1) // 2), min_similarity
    )
    if len(coarse) == 0:
        return coarse, coarse_xy, torch.empty(0, dtype=feature_map.dtype)
    fine, xy, similarity = guided_matches(descriptors[coarse], coarse_xy * 2, feature_map, fine_radius, min_similarity)
    return coarse[fine], xy, similarity
