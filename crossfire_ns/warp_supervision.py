"""Self-supervision for the feature CNN from the training images alone: random warps with known pixel maps.

Each training image is warped by a random homography (affine + perspective, kornia) and, separately,
re-lit and blurred; the CNN's features of the original and of the warped copy must agree at corresponding
pixels and differ from every other pixel (``losses.dense_negative_info_nce``). Unlike the descriptor loss,
this needs no rendered depth, so it trains from the first step, and its positives are exact to a fraction of
a pixel: it is what makes guided matching pixel-accurate. The blur
stands in for the softness of renders, which the query's features are matched against at localization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import kornia.augmentation as KA
import torch
from jaxtyping import Float
from torch import Tensor, nn


def apply_homography(homography: Float[Tensor, "B 3 3"], pixels: Float[Tensor, "B N 2"]) -> Float[Tensor, "B N 2"]:
    """Map (x, y) pixel coordinates (nerfstudio's convention, centres at +0.5) through kornia homographies.

    kornia's transform matrices act on coordinates whose pixel centres are integers, hence the half-pixel
    shifts on either side.
    """
    ones = torch.ones_like(pixels[..., :1])
    mapped = torch.cat([pixels - 0.5, ones], dim=-1) @ homography.transpose(1, 2)
    return mapped[..., :2] / mapped[..., 2:3].clamp(min=1e-8) + 0.5


@dataclass
class WarpedPairs:
    """A batch of warped images and the correspondences between them and their originals."""

    warped: Float[Tensor, "B 3 H W"]
    pixels: Float[Tensor, "B N 2"]
    """Sampled pixels (x, y) of the original images."""
    warped_pixels: Float[Tensor, "B N 2"]
    """Where each of them lies in its warped image."""
    valid: Tensor
    """(B, N) bool: the warped pixel lies inside the warped image (away from its border)."""


class RandomWarp(nn.Module):
    """Random homographies (rotation, translation, zoom, shear, perspective) and blur of an image batch."""

    def __init__(
        self,
        degrees: float = 20.0,
        translate: float = 0.1,
        scale: Tuple[float, float] = (0.75, 1.3),
        shear: float = 8.0,
        perspective: float = 0.3,
        max_blur_sigma: float = 1.5,
    ) -> None:
        super().__init__()
        self.geometric = KA.AugmentationSequential(
            KA.RandomAffine(degrees=degrees, translate=(translate, translate), scale=scale, shear=shear, p=1.0),
            KA.RandomPerspective(perspective, p=0.7),
            data_keys=["input"],
        )
        self.blur = KA.RandomGaussianBlur((7, 7), (0.3, max_blur_sigma), p=0.5) if max_blur_sigma > 0 else None

    @torch.no_grad()
    def forward(self, images: Float[Tensor, "B 3 H W"], num_points: int, border_px: float = 1.0) -> WarpedPairs:
        batch, _, height, width = images.shape
        warped = self.geometric(images)
        homography = self.geometric.transform_matrix.to(images)
        if self.blur is not None:
            warped = self.blur(warped)
        size = torch.tensor([width, height], device=images.device, dtype=images.dtype)
        pixels = torch.rand(batch, num_points, 2, device=images.device, dtype=images.dtype) * size
        warped_pixels = apply_homography(homography, pixels)
        valid = ((warped_pixels > border_px) & (warped_pixels < size - border_px)).all(dim=-1)
        return WarpedPairs(warped, pixels, warped_pixels, valid)
