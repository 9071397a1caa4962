"""Query conditions: a fixed, documented, seeded set of photometric changes applied to query images.

Every change works on 8-bit RGB in five steps, in this order (values in [0, 1]):

0. **motion blur**, in linear light (``lin = x ** 2.2``): a straight-line box kernel of ``blur_length`` times the
   image width (9 px on a 160 px wide image is ``blur_length = 9 / 160 = 0.05625``), at ``blur_angle_deg``
   (0: horizontal), centred on each pixel so the pose stays the mid-exposure pose; a length that is not a whole
   number of pixels gets partial end taps; OpenCV's ``filter2D`` with reflected borders. Applied before the
   exposure and the noise, as a camera's sensor integrates light before it is read out;
1. **exposure and colour cast**, in linear light: ``lin = x ** 2.2``, ``lin = lin * exposure * color_gain[c]``,
   clipped to [0, 1] (saturated highlights stay saturated), re-encoded as ``y = lin ** (1 / 2.2)``;
2. **gamma** (a different tone curve): ``y = y ** gamma`` (> 1 darkens mid-tones, < 1 lifts them);
3. **sensor noise**: ``y = y + N(0, noise_std)`` per pixel and channel, from a generator seeded by
   ``(seed, index of the image in its folder)``, so the same folder always gives the same bytes;
4. clip to [0, 1] and round to 8 bits.

The named conditions (``CONDITIONS``) are what the benchmark runs; ``lighting`` combines the photometric changes
and is the one reported by default; ``blur`` is horizontal motion blur of 5.6% of the image width (9 px at
160 px) and nothing else; ``lowlight`` is strong underexposure (x0.2 on the encoded values, i.e. exposure
0.2 ** 2.2 = 0.029 in linear light, -5.1 EV), a steeper tone curve (gamma 1.4) and sensor noise (sigma 0.03):
what a robot's camera sees in a dim corridor (x0.2 in linear light, -2.3 EV, is too mild: COLMAP SIFT still
localizes every bundled query under it). Geometry, intrinsics and ground truth are untouched: only pixels change.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

DISPLAY_GAMMA = 2.2
"""The encoding assumed for 8-bit images when exposure and colour gains are applied in linear light."""


@dataclass(frozen=True)
class PhotometricChange:
    """One photometric change; the identity by default."""

    exposure: float = 1.0
    """Multiplier on linear intensity (0.5 = one stop darker)."""
    gamma: float = 1.0
    """Exponent applied to the re-encoded values (1 = unchanged tone curve)."""
    color_gain: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Per-channel (R, G, B) multiplier on linear intensity: a white-balance / colour cast."""
    noise_std: float = 0.0
    """Standard deviation of additive Gaussian noise on [0, 1] values (0.02 is about 5 grey levels)."""
    blur_length: float = 0.0
    """Linear motion blur length as a share of the image width (0: none; 0.05625 is 9 px at 160 px wide)."""
    blur_angle_deg: float = 0.0
    """Direction of the motion blur in the image, degrees from the horizontal (0: horizontal, 90: vertical)."""

    def describe(self) -> str:
        """Short human-readable description, e.g. for the benchmark table's notes."""
        parts = []
        if self.blur_length:
            direction = "horizontal" if self.blur_angle_deg == 0 else f"at {self.blur_angle_deg:g} deg"
            parts.append(f"{direction} linear motion blur of {100 * self.blur_length:.3g}% of the image width")
        if self.exposure != 1.0:
            parts.append(f"exposure x{self.exposure:g} ({np.log2(self.exposure):+.2f} EV)")
        if tuple(self.color_gain) != (1.0, 1.0, 1.0):
            parts.append("colour gains R,G,B x" + ",".join(f"{g:g}" for g in self.color_gain))
        if self.gamma != 1.0:
            parts.append(f"gamma {self.gamma:g}")
        if self.noise_std:
            parts.append(f"Gaussian noise sigma {self.noise_std:g} (of 1)")
        return ", ".join(parts) or "unchanged"


CONDITIONS: Dict[str, Optional[PhotometricChange]] = {
    "original": None,
    "lighting": PhotometricChange(exposure=0.6, gamma=1.2, color_gain=(1.15, 1.0, 0.8), noise_std=0.02),
    "dark": PhotometricChange(exposure=0.4),
    "bright": PhotometricChange(exposure=2.0),
    "gamma": PhotometricChange(gamma=1.6),
    "cast": PhotometricChange(color_gain=(1.25, 1.0, 0.7)),
    "noise": PhotometricChange(noise_std=0.04),
    "blur": PhotometricChange(blur_length=9.0 / 160.0),
    "lowlight": PhotometricChange(exposure=0.2**DISPLAY_GAMMA, gamma=1.4, noise_std=0.03),
}
"""Named query conditions. ``original`` is the query as captured; ``lighting`` (the default lighting change)
is darker by 0.74 EV, warmer, with a steeper tone curve and mild noise; ``dark`` to ``noise`` isolate one factor
each; ``blur`` (horizontal motion blur, 5.6% of the width) and ``lowlight`` (x0.2 on the encoded values, gamma 1.4,
noise 0.03) are the conditions robots meet."""


def motion_blur_kernel(length_px: float, angle_deg: float = 0.0) -> np.ndarray:
    """A normalised (K, K) line kernel of ``length_px`` pixels through the centre at ``angle_deg`` (odd K).

    Along the line, a tap at offset k covers [k - 0.5, k + 0.5] intersected with [-length/2, length/2], so a
    fractional length gets partial end taps and the kernel stays centred (no shift of the image)."""
    half = max(float(length_px), 1.0) / 2.0
    n = int(math.ceil(half - 0.5))
    offsets = np.arange(-n, n + 1, dtype=np.float64)
    weights = np.clip(np.minimum(offsets + 0.5, half) - np.maximum(offsets - 0.5, -half), 0.0, 1.0)
    kernel = np.zeros((2 * n + 1, 2 * n + 1), dtype=np.float64)
    if angle_deg == 0.0:
        kernel[n, :] = weights
    else:  # a rotated line: the horizontal one, resampled (weights are renormalised below)
        import cv2

        kernel[n, :] = weights
        rotation = cv2.getRotationMatrix2D((float(n), float(n)), float(angle_deg), 1.0)
        kernel = cv2.warpAffine(kernel, rotation, kernel.shape[::-1], flags=cv2.INTER_LINEAR)
    return kernel / kernel.sum()


def _blur(linear: np.ndarray, change: PhotometricChange) -> np.ndarray:
    """``linear`` (H, W, 3) float64 under the change's motion blur (OpenCV filter2D, reflected borders)."""
    import cv2

    kernel = motion_blur_kernel(change.blur_length * linear.shape[1], change.blur_angle_deg)
    return cv2.filter2D(linear, cv2.CV_64F, kernel, borderType=cv2.BORDER_REFLECT)


DEFAULT_SEED = 2024
"""Seed of the noise; fixed so that every run of the benchmark sees the same pixels."""


def apply_change(image: np.ndarray, change: PhotometricChange, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB under ``change``, as a new uint8 array (see the module docstring).

    ``rng`` draws the noise; it is only needed (and required) when ``change.noise_std > 0``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    x = image.astype(np.float64) / 255.0
    if change.blur_length > 0:
        x = np.clip(_blur(x**DISPLAY_GAMMA, change), 0.0, 1.0) ** (1.0 / DISPLAY_GAMMA)
    gains = np.asarray(change.color_gain, dtype=np.float64).reshape(1, 1, 3) * change.exposure
    if not np.allclose(gains, 1.0):
        linear = np.clip(x**DISPLAY_GAMMA * gains, 0.0, 1.0)
        x = linear ** (1.0 / DISPLAY_GAMMA)
    if change.gamma != 1.0:
        x = x**change.gamma
    if change.noise_std > 0:
        if rng is None:
            raise ValueError("a noise change needs a seeded numpy Generator (rng)")
        x = x + rng.normal(0.0, change.noise_std, size=x.shape)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The noise generator of the ``index``-th image of a folder: independent per image, fixed per seed."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _resolve(folder: Path, file_path: str) -> Path:
    path = Path(file_path)
    return path if path.is_absolute() else folder / path


def _unique_name(stem: str, used: set, index: int) -> str:
    name = f"{stem}.png"
    if name in used:
        name = f"{stem}_{index:03d}.png"
    used.add(name)
    return name


def relight_folder(
    src_dir: Union[str, Path], dst_dir: Union[str, Path], change: PhotometricChange, seed: int = DEFAULT_SEED
) -> Path:
    """Write ``dst_dir``: every frame of ``src_dir/transforms.json`` under ``change``, as PNG.

    The new ``transforms.json`` keeps every key of the source (intrinsics, distortion, ground truth); only
    ``file_path`` changes, to ``images/<stem>.png`` relative to ``dst_dir``. Images are written first and
    ``transforms.json`` last, so a listed image always exists. Returns the path of the new transforms.json.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    meta = json.loads((src_dir / "transforms.json").read_text(encoding="utf-8"))
    (dst_dir / "images").mkdir(parents=True, exist_ok=True)
    frames: List[dict] = []
    used: set = set()
    for index, frame in enumerate(meta["frames"]):
        source = _resolve(src_dir, frame["file_path"])
        with Image.open(source) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        out = apply_change(rgb, change, image_rng(seed, index))
        rel = f"images/{_unique_name(Path(frame['file_path']).stem, used, index)}"
        tmp = dst_dir / f"{rel}.tmp.png"
        Image.fromarray(out).save(tmp)
        tmp.replace(dst_dir / rel)
        frames.append({**frame, "file_path": rel})
    meta = {**meta, "frames": frames, "photometric_change": asdict(change), "photometric_seed": int(seed)}
    target = dst_dir / "transforms.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    tmp.replace(target)
    return target
