"""Where an image has texture to match: the local grey-level standard deviation and the floor below which a pixel
or a cell carries no position."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIN_TEXTURE = 2.0 / 255.0
"""Pixels (query) and cells (map index) whose 5x5 grey-level standard deviation is below this are never matched."""


def local_std(grey: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """(N, C, H, W) grey levels -> their standard deviation over the (2 radius + 1)^2 square around each pixel, same
    shape and dtype (borders average over the pixels inside the image)."""
    side = 2 * radius + 1
    mean = F.avg_pool2d(grey, side, 1, radius, count_include_pad=False)
    return (F.avg_pool2d(grey.square(), side, 1, radius, count_include_pad=False) - mean.square()).clamp(min=0).sqrt()
