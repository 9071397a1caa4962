"""The self-supervised metric-learning loss, as pure functions.

For rays sampled from one image, the rendered descriptor ``d_i`` and the encoder feature ``f_i`` at the
same pixel are a positive pair; features ``f_j`` at other pixels of the same image are negatives, except
those whose rendered 3D points lie within ``radius`` of point ``i``: they are the same place, not a negative.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def near_point_mask(points: Float[Tensor, "B R 3"], radius: Union[float, Float[Tensor, "B R"]]) -> torch.Tensor:
    """(B, R, R) bool: pairs (i, j), i != j, whose 3D points are closer than the radius (not negatives).

    ``radius`` is one distance, or one per ray (e.g. a pixel's footprint at its depth); a pair uses the
    larger of its two radii.
    """
    dist = torch.cdist(points, points)
    if isinstance(radius, Tensor):
        radius = torch.maximum(radius[:, :, None], radius[:, None, :])
    eye = torch.eye(points.shape[1], dtype=torch.bool, device=points.device)
    return (dist < radius) & ~eye


def masked_info_nce(
    rendered: Float[Tensor, "B R D"],
    encoded: Float[Tensor, "B R D"],
    points: Float[Tensor, "B R 3"],
    radius: Union[float, Float[Tensor, "B R"]],
    temperature: float,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """Symmetric InfoNCE between rendered descriptors and encoder features of the same image.

    Args:
        rendered: L2-normalised descriptors rendered from the field, grouped by image.
        encoded: L2-normalised CNN features sampled at the same pixels.
        points: rendered 3D points of the rays (no gradient needed), used to drop false negatives.
        radius: pairs closer than this (scene units; one value or one per ray) are neither positive nor negative.
        temperature: softmax temperature on cosine similarities.

    Returns:
        The loss, and stats: ``match_accuracy`` (share of rows whose best match is the positive) and
        ``excluded_fraction`` (share of off-diagonal pairs masked as near points).
    """
    num_rays = rendered.shape[1]
    logits = torch.einsum("brd,bsd->brs", rendered, encoded) / temperature
    excluded = near_point_mask(points.detach(), radius.detach() if isinstance(radius, Tensor) else radius)
    logits = logits.masked_fill(excluded, float("-inf"))
    target = torch.arange(num_rays, device=rendered.device).repeat(rendered.shape[0])
    loss_rows = F.cross_entropy(logits.reshape(-1, num_rays), target)
    loss_cols = F.cross_entropy(logits.transpose(1, 2).reshape(-1, num_rays), target)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=-1).reshape(-1) == target).float().mean()
        pairs = max(num_rays * (num_rays - 1), 1)
        excluded_fraction = excluded.float().sum() / (pairs * rendered.shape[0])
    return 0.5 * (loss_rows + loss_cols), {"match_accuracy": accuracy, "excluded_fraction": excluded_fraction}


def near_cells(
    pixels: Float[Tensor, "B R 2"], grid_size: Tuple[int, int], image_size: Tuple[int, int], radius_px: float
) -> Tensor:
    """(B, R, h*w) bool: the feature cells whose centres lie within ``radius_px`` (image pixels) of each pixel.

    Only the few cells of a small window around each pixel can be that close, so the distances are computed
    for those alone and scattered into the mask (the full (B, R, h*w) distance table costs as much as the loss).
    """
    h, w = grid_size
    height, width = image_size
    batch, rays, _ = pixels.shape
    stride = pixels.new_tensor([width / w, height / h])
    cell = pixels / stride - 0.5  # continuous cell coordinates (x, y); centres at integers
    reach_x, reach_y = int(radius_px / float(stride[0])) + 1, int(radius_px / float(stride[1])) + 1
    dy, dx = torch.meshgrid(
        torch.arange(-reach_y, reach_y + 1, device=pixels.device),
        torch.arange(-reach_x, reach_x + 1, device=pixels.device),
        indexing="ij",
    )
    candidates = torch.floor(cell).long()[:, :, None, :] + torch.stack([dx, dy], dim=-1).reshape(1, 1, -1, 2)
    offset_px = (candidates.to(pixels.dtype) - cell[:, :, None, :]) * stride
    inside = (candidates >= 0).all(-1) & (candidates[..., 0] < w) & (candidates[..., 1] < h)
    near = inside & (offset_px.square().sum(-1) < radius_px**2)
    index = torch.where(near, candidates[..., 1] * w + candidates[..., 0], h * w)  # h*w: a discarded column
    mask = torch.zeros(batch, rays, h * w + 1, dtype=torch.bool, device=pixels.device)
    return mask.scatter_(-1, index, True)[..., : h * w]


def dense_negative_info_nce(
    rendered: Float[Tensor, "B R D"],
    positive: Float[Tensor, "B R D"],
    feature_map: Float[Tensor, "B D h w"],
    pixels: Float[Tensor, "B R 2"],
    image_size: Tuple[int, int],
    exclusion_radius_px: float,
    temperature: float,
    valid: Optional[Tensor] = None,
) -> Tuple[Tensor, Dict[str, Tensor]]:
    """InfoNCE of each rendered descriptor against the CNN features of its *whole* image.

    Localization matches a rendered descriptor against every pixel of the query, so every pixel of the
    training image is a negative here, not only the few hundred sampled rays. Within one image, different
    pixels see different 3D points, so feature cells whose centres lie within ``exclusion_radius_px``
    (full-resolution pixels) of the ray's pixel are the only ones treated as "same place" and left out.

    Args:
        rendered: L2-normalised rendered descriptors, grouped by image.
        positive: the CNN features sampled (bilinearly) at the rays' pixels, the positives.
        feature_map: the dense L2-normalised CNN features of the same images (any output stride).
        pixels: (x, y) pixel coordinates of the rays in the full-resolution image, centres at +0.5.
        image_size: (H, W) of the full-resolution image.
        exclusion_radius_px: feature cells closer than this to the ray's pixel are not negatives.
        temperature: softmax temperature on cosine similarities.
        valid: optional (B, R) bool; rows that are False count neither in the loss nor in the accuracy.

    Returns:
        The loss, and ``dense_match_accuracy``: share of rays whose positive beats every negative cell.
    """
    batch, _, h, w = feature_map.shape
    near = near_cells(pixels, (h, w), image_size, exclusion_radius_px)
    scaled = rendered / temperature  # scale the (B, R, D) side, not the (B, R, h*w) logits
    negatives = torch.einsum("brd,bdn->brn", scaled, feature_map.reshape(batch, -1, h * w))
    negatives.masked_fill_(near, float("-inf"))  # in place: the product's backward does not need its output
    positives = (scaled * positive).sum(-1)
    # cross-entropy with the positive as class 0, without concatenating it to the (B, R, h*w) negatives
    losses = (torch.logaddexp(positives, torch.logsumexp(negatives, dim=-1)) - positives).reshape(-1)
    hits = (positives > negatives.amax(dim=-1)).float().detach().reshape(-1)
    if valid is None:
        return losses.mean(), {"dense_match_accuracy": hits.mean()}
    weights = valid.reshape(-1).to(losses.dtype)
    count = weights.sum().clamp(min=1.0)
    return (losses * weights).sum() / count, {"dense_match_accuracy": (hits * weights).sum() / count}
