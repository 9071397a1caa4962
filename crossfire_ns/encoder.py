"""The scene-specific CNN: dense, L2-normalised D-dim features at full image resolution.

A small U-Net trained from scratch (nothing pretrained is downloaded). Photometric augmentation of its
input during training (kornia) makes query features robust to lighting changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Tuple, Type

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn


def _conv_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1),
        nn.GroupNorm(min(8, out_ch), out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1),
        nn.ReLU(inplace=True),
    )


@dataclass
class FeatureEncoderConfig(InstantiateConfig):
    """Configuration of the dense feature CNN."""

    _target: Type = field(default_factory=lambda: FeatureEncoder)
    channels: Tuple[int, ...] = (16, 32, 64, 64)
    """Channels per level; each level after the first halves the resolution (wider receptive field)."""
    output_stride: int = 1
    """1: features at image resolution; 2: at half resolution (4x cheaper), looked up bilinearly."""
    input_normalization: Literal["local-log", "none"] = "local-log"
    """local-log: the CNN sees each colour channel's log, minus its local mean, over its local spread (a
    Gaussian window of ``normalization_sigma`` px). A gain per channel (exposure, colour cast), a power law
    (gamma) and smooth shading all vanish from that, so query features survive lighting changes. none: raw RGB."""
    normalization_sigma: float = 4.0
    """Width (px, at the training images' scale) of the local window of the input normalisation."""
    augment: bool = True
    """Photometric augmentation of training inputs (brightness, contrast, light colour, smooth illumination
    gradients, gamma, blur, noise; optionally shading edges)."""
    shading_edges_p: float = 0.0
    """Probability, per training image, of a random multiplicative gain over irregular sharp-edged regions
    (``RandomPlasmaGain``), as when a moved light brightens some faces and darkens others. Off: it made the CNN more
    invariant to the bundled scene's moved light but not on fern."""


class FeatureEncoder(nn.Module):
    """Image (B,3,H,W) in [0,1] to features (B,D,H/s,W/s) for output stride s, unit norm along D."""

    config: FeatureEncoderConfig

    def __init__(self, config: FeatureEncoderConfig, descriptor_dim: int) -> None:
        super().__init__()
        self.config = config
        chs = config.channels
        self.down = nn.ModuleList(
            [_conv_block(3, chs[0], stride=config.output_stride)]
            + [_conv_block(chs[i - 1], chs[i], stride=2) for i in range(1, len(chs))]
        )
        self.up = nn.ModuleList([_conv_block(chs[i + 1] + chs[i], chs[i]) for i in reversed(range(len(chs) - 1))])
        self.head = nn.Conv2d(chs[0], descriptor_dim, 1)
        self.augmentation = nn.Sequential(
            K.ColorJiggle(brightness=0.4, contrast=0.4, saturation=0.3, hue=0.05, p=0.9),
            K.RandomPlanckianJitter(mode="blackbody", p=0.5),  # colour of the light
            K.RandomGaussianIllumination(gain=(0.05, 0.3), p=0.4),  # a light moved: smooth local gain
            K.RandomLinearIllumination(gain=(0.05, 0.3), p=0.3),
            *([RandomPlasmaGain(p=config.shading_edges_p)] if config.shading_edges_p > 0 else []),
            K.RandomGamma(gamma=(0.6, 1.6), p=0.5),
            K.RandomGaussianBlur((5, 5), (0.1, 1.2), p=0.3),
            K.RandomGaussianNoise(std=0.02, p=0.3),
        )

    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D H W"]:
        skips = []
        x = images
        if self.config.input_normalization == "local-log":
            x = local_log_normalize(images, self.config.normalization_sigma)
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return unit_channels(self.head(x))

    def augment(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        """Random photometric changes (training only): the map must not depend on the lighting."""
        if not self.config.augment:
            return images
        return self.augmentation(images).clamp(0.0, 1.0)


def unit_channels(x: Float[Tensor, "B D H W"], eps: float = 1e-12) -> Float[Tensor, "B D H W"]:
    """``F.normalize(x, dim=1)``, the same values to float rounding: torch's CPU norm over the channel axis of an
    image-shaped tensor is about 3x slower forward + backward (23-28 ms against 8 ms at 6 x 16 x 60 x 80)."""
    return x * x.square().sum(1, keepdim=True).clamp_min(eps * eps).rsqrt()  # finite gradient at 0, too


class RandomPlasmaGain(nn.Module):
    """Multiply random sharp-edged regions of each image by a random gain (B,3,H,W) -> (B,3,H,W), in [0, 1].

    The regions are a thresholded plasma fractal (``kornia.contrib.diamond_square``, as in kornia's
    ``RandomPlasmaShadow``, which instead adds a negative offset and so wipes the texture out of dark regions).
    The log-gain is uniform in ``log_gain`` (darker or brighter), per channel within ``tint`` of it (a coloured
    light lights some regions and not others).
    """

    def __init__(
        self,
        p: float = 0.5,
        log_gain: Tuple[float, float] = (-1.2, 0.7),
        tint: float = 0.15,
        roughness: Tuple[float, float] = (0.1, 0.4),
    ) -> None:
        super().__init__()
        self.p, self.log_gain, self.tint, self.roughness = p, log_gain, tint, roughness

    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        from kornia.contrib import diamond_square

        chosen = torch.nonzero(torch.rand(images.shape[0]) < self.p).flatten().to(images.device)
        if chosen.numel() == 0:
            return images
        n, (h, w) = chosen.numel(), images.shape[-2:]
        options = {"device": images.device, "dtype": images.dtype}
        roughness = torch.empty(n, 1, 1, 1, **options).uniform_(*self.roughness)
        plasma = diamond_square((n, 1, h, w), roughness=roughness, normalize_range=(0.0, 1.0), **options)
        regions = (plasma < torch.rand(n, 1, 1, 1, **options)).to(images.dtype)
        log_gain = torch.empty(n, 1, 1, 1, **options).uniform_(*self.log_gain)
        log_gain = log_gain + torch.empty(n, 3, 1, 1, **options).uniform_(-self.tint, self.tint)
        out = images.clone()
        out[chosen] = (images[chosen] * torch.exp(log_gain * regions)).clamp(0.0, 1.0)
        return out


def local_log_normalize(
    images: Float[Tensor, "B C H W"], sigma: float, floor: float = 1.0 / 64, eps: float = 0.01
) -> Float[Tensor, "B C H W"]:
    """Per channel: (log x - local mean) / local standard deviation, over a Gaussian window of ``sigma`` px.

    For x' = g * x ** p (a gain g per channel and a gamma p > 0), log x' = log g + p log x: the local mean
    takes the gain away and the local spread the power, so the output is the same. ``floor`` keeps the log of
    black pixels finite; ``eps`` (a variance) keeps flat regions from amplifying noise.
    """
    logs = torch.log(images.clamp(min=floor))
    factor = max(1, int(sigma // 2))  # the local statistics are smooth: compute them at a lower resolution
    small_sigma = sigma / factor
    radius = int(3 * small_sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=logs.dtype)
    kernel = torch.exp(-0.5 * (taps / small_sigma) ** 2)
    kernel = (kernel / kernel.sum()).repeat(images.shape[1], 1, 1, 1)  # (C, 1, 1, k): depthwise, separable

    def blur(t: Tensor) -> Tensor:
        small = F.avg_pool2d(t, factor, ceil_mode=True) if factor > 1 else t
        small = F.conv2d(F.pad(small, (radius, radius, 0, 0), mode="replicate"), kernel, groups=t.shape[1])
        small = F.conv2d(
            F.pad(small, (0, 0, radius, radius), mode="replicate"), kernel.transpose(2, 3), groups=t.shape[1]
        )
        if factor == 1:
            return small
        return F.interpolate(small, size=t.shape[-2:], mode="bilinear", align_corners=False)

    centred = logs - blur(logs)
    return centred / torch.sqrt(blur(centred.square()) + eps)


def sample_features(
    features: Float[Tensor, "B D h w"], pixels: Float[Tensor, "B R 2"], image_size: Tuple[int, int]
) -> Float[Tensor, "B R D"]:
    """Bilinear lookup of dense features at continuous image pixel coordinates (x, y), pixel centres at +0.5.

    ``image_size`` is (H, W) of the image the features were computed from, so features at any stride
    covering the same extent are looked up at the same place. The result is re-normalised, since
    interpolating unit vectors shortens them.
    """
    height, width = image_size
    scale = torch.tensor([2.0 / width, 2.0 / height], device=pixels.device, dtype=pixels.dtype)
    grid = pixels * scale - 1.0  # align_corners=False: -1 and 1 are the outer image edges
    sampled = F.grid_sample(features, grid.unsqueeze(1), mode="bilinear", align_corners=False, padding_mode="border")
    return F.normalize(sampled.squeeze(2).transpose(1, 2), dim=-1)
