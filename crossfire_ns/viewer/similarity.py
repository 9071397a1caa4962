"""Cosine similarity of rendered descriptors to a reference descriptor, and its display as a heat map.

A user clicks a point; its descriptor becomes the reference, and the map shows where else the field puts a
similar descriptor. Distinctive, view-consistent descriptors light up one spot, the same spot from every view.
"""

from __future__ import annotations

from typing import Optional

import matplotlib
import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_similarity_map(descriptors: Tensor, reference: Tensor) -> Tensor:
    """Cosine similarity (..., 1) in [-1, 1] of each descriptor (..., D) to ``reference`` (D,).

    Both sides are L2-normalised here, so unnormalised inputs are fine; a zero descriptor gives 0.
    """
    if reference.shape != descriptors.shape[-1:]:
        raise ValueError(f"reference has shape {tuple(reference.shape)}, descriptors end in {descriptors.shape[-1]}")
    reference = F.normalize(reference.float().to(descriptors.device), dim=-1)
    return (F.normalize(descriptors.float(), dim=-1) @ reference)[..., None]


def similarity_heatmap(
    similarity: Tensor,
    floor: float = 0.5,
    background: Optional[Tensor] = None,
    colormap: str = "turbo",
    dim: float = 0.4,
) -> Tensor:
    """RGB (..., 3) in [0, 1]: similarity (..., 1) from ``floor`` to 1 through ``colormap``; below the floor, the
    ``background`` image (..., 3) in dimmed grey (black without one), so the heat sits on the scene it belongs to.

    The mapping is fixed (no per-frame normalisation), so the same similarity has the same colour in every frame.
    """
    if not -1.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [-1, 1), got {floor}")
    scaled = ((similarity[..., 0].float() - floor) / (1.0 - floor)).clamp(0.0, 1.0)
    table = torch.tensor(matplotlib.colormaps[colormap](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)
    heat = table.to(similarity.device)[(scaled * 255).round().long()]
    if background is None:
        base = torch.zeros_like(heat)
    else:
        grey = background[..., :3].float().mean(dim=-1, keepdim=True).clamp(0.0, 1.0)
        base = (dim * grey).expand_as(heat)
    return torch.where((similarity[..., 0] >= floor)[..., None], heat, base)
