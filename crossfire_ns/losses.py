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
    height, width = image_size
    ys = (torch.arange(h, device=pixels.device, dtype=pixels.dtype) + 0.5) * (height / h)
    xs = (torch.arange(w, device=pixels.device, dtype=pixels.dtype) + 0.5) * (width / w)
    centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(1, 1, h * w, 2)
    near = (pixels[:, :, None, :] - centres).square().sum(-1) < exclusion_radius_px**2
    negatives = torch.einsum("brd,bdn->brn", rendered, feature_map.reshape(batch, -1, h * w)) / temperature
    negatives = negatives.masked_fill(near, float("-inf"))
    positives = (rendered * positive).sum(-1, keepdim=True) / temperature
    logits = torch.cat([positives, negatives], dim=-1).reshape(-1, h * w + 1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    losses = F.cross_entropy(logits, target, reduction="none")
    hits = (logits.argmax(dim=-1) == 0).float().detach()
    if valid is None:
        return losses.mean(), {"dense_match_accuracy": hits.mean()}
    weights = valid.reshape(-1).to(losses.dtype)
    count = weights.sum().clamp(min=1.0)
    return (losses * weights).sum() / count, {"dense_match_accuracy": (hits * weights).sum() / count}
