"""A PCA projection of descriptors to RGB that is fitted once and then applied unchanged to every frame.

nerfstudio colours outputs of more than 3 channels with a PCA recomputed on every frame, so the colours jump as
the camera moves. Here the projection (mean, 3 principal directions, and a per-channel display range) is fitted
once and kept, so a surface keeps its colour from every viewpoint. The fit is deterministic: the sign of each
direction is fixed (its largest loading is positive) and subsampling uses a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class PCAProjection:
    """A fitted descriptor -> RGB projection: ``rgb = clip(((x - mean) @ components - low) / (high - low), 0, 1)``."""

    mean: Tensor
    """(D,) mean descriptor of the fitting set."""
    components: Tensor
    """(D, 3) principal directions, strongest first."""
    low: Tensor
    """(3,) value of each projected channel shown as 0 (a low quantile of the fitting set)."""
    high: Tensor
    """(3,) value of each projected channel shown as 1 (a high quantile of the fitting set)."""

    def to(self, device: torch.device | str) -> "PCAProjection":
        return PCAProjection(*(t.to(device) for t in (self.mean, self.components, self.low, self.high)))


def fit_pca(
    descriptors: Tensor,
    mask: Optional[Tensor] = None,
    max_samples: int = 20000,
    quantile: float = 0.01,
    seed: int = 0,
) -> PCAProjection:
    """Fit a 3-component projection to ``descriptors`` (..., D), using only the entries where ``mask`` (...) holds.

    When the mask selects fewer than 3 entries every entry is used. At most ``max_samples`` entries (a seeded random
    subset) are used. The display range of each channel spans its ``quantile`` and ``1 - quantile`` quantiles, so a
    few outliers do not wash the colours out. With fewer than 3 descriptor dimensions the missing channels are 0.
    """
    flat = descriptors.reshape(-1, descriptors.shape[-1]).float()
    if flat.shape[0] == 0:
        raise ValueError("fit_pca needs at least one descriptor")
    if mask is not None:
        keep = mask.reshape(-1).bool()
        if int(keep.sum()) >= 3:
            flat = flat[keep]
    if flat.shape[0] > max_samples:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        index = torch.randperm(flat.shape[0], generator=generator)[:max_samples].to(flat.device)
        flat = flat[index]
    mean = flat.mean(dim=0)
    centred = flat - mean
    covariance = centred.T @ centred / max(flat.shape[0] - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())  # ascending eigenvalues
    order = torch.argsort(eigenvalues, descending=True)[:3]
    components = eigenvectors[:, order].to(flat.dtype)
    if components.shape[1] < 3:
        padding = torch.zeros(components.shape[0], 3 - components.shape[1], dtype=flat.dtype, device=flat.device)
        components = torch.cat([components, padding], dim=1)
    strongest = components.abs().argmax(dim=0)
    signs = torch.sign(components[strongest, torch.arange(3, device=flat.device)])
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    projected = centred @ components
    low = torch.quantile(projected, quantile, dim=0)
    high = torch.quantile(projected, 1.0 - quantile, dim=0)
    flat_range = (high - low) < 1e-6
    low = torch.where(flat_range, low - 0.5, low)
    high = torch.where(flat_range, high + 0.5, high)
    return PCAProjection(mean=mean, components=components, low=low, high=high)


def apply_pca(descriptors: Tensor, projection: PCAProjection) -> Tensor:
    """Descriptors (..., D) -> RGB (..., 3) in [0, 1] with a fitted projection (the same colours in every frame)."""
    projection = projection.to(descriptors.device)
    projected = (descriptors.float() - projection.mean) @ projection.components
    return ((projected - projection.low) / (projection.high - projection.low)).clamp(0.0, 1.0)
