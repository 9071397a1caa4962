"""Query conditions: a fixed, documented, seeded set of photometric changes applied to query images.

Every change works on 8-bit RGB in four steps, in this order (values in [0, 1]):

1. **exposure and colour cast**, in linear light: ``lin = x ** 2.2``, ``lin = lin * exposure * color_gain[c]``,
   clipped to [0, 1] (saturated highlights stay saturated), re-encoded as ``y = lin ** (1 / 2.2)``;
2. **gamma** (a different tone curve): ``y = y ** gamma`` (> 1 darkens mid-tones, < 1 lifts them);
3. **sensor noise**: ``y = y + N(0, noise_std)`` per pixel and channel, from a generator seeded by
   ``(seed, index of the image in its folder)``, so the same folder always gives the same bytes;
4. clip to [0, 1] and round to 8 bits.

The named conditions (``CONDITIONS``) are what the benchmark runs; ``lighting`` combines all four changes
and is the one reported by default. Geometry, intrinsics and ground truth are untouched: only pixels change.
"""

from __future__ import annotations

import json
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

    def describe(self) -> str:
        """Short human-readable description, e.g. for the benchmark table's notes."""
        parts = []
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
}
"""Named query conditions. ``original`` is the query as captured; ``lighting`` (the default lighting change)
is darker by 0.74 EV, warmer, with a steeper tone curve and mild noise; the others isolate one factor each."""

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
