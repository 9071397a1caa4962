"""SIFT features with COLMAP's CPU implementation (pycolmap), as hloc's ``sift`` configuration extracts them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class SiftConfig:
    """COLMAP SIFT settings (the defaults are COLMAP's, except the feature cap)."""

    max_num_features: int = 4096
    """Keep at most this many keypoints per image (strongest first)."""
    first_octave: int = -1
    """-1 upsamples the image once first: more keypoints on the small images of a CPU benchmark."""
    peak_threshold: float = 0.02 / 3
    """Difference-of-Gaussians peak threshold (COLMAP's default)."""


@dataclass
class Features:
    """Keypoints and descriptors of one image."""

    keypoints: np.ndarray
    """(N, 4) float32: x, y (pixels, centre of the first pixel at 0.5), scale, orientation."""
    descriptors: np.ndarray
    """(N, 128) uint8 SIFT descriptors (L1-root normalised, as COLMAP stores them)."""

    @property
    def xy(self) -> np.ndarray:
        """(N, 2) float64 pixel coordinates."""
        return np.asarray(self.keypoints[:, :2], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keypoints)


def make_extractor(config: Optional[SiftConfig] = None):
    """A pycolmap SIFT extractor on the CPU (``SiftConfig()`` by default)."""
    import pycolmap

    config = config or SiftConfig()

    options = pycolmap.FeatureExtractionOptions()
    options.use_gpu = False
    options.sift.max_num_features = config.max_num_features
    options.sift.first_octave = config.first_octave
    options.sift.peak_threshold = config.peak_threshold
    return pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu)


def extract(extractor, rgb: np.ndarray) -> Features:
    """Features of an (H, W, 3) uint8 RGB image, converted to grey (ITU-R 601 luma, as COLMAP does)."""
    import pycolmap

    rgb = np.asarray(rgb)
    if rgb.ndim == 3:
        rgb = np.round(rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    grey = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    keypoints, descriptors = extractor.extract_from_uint8_array(grey)
    return Features(
        keypoints=np.asarray(pycolmap.keypoints_to_matrix(keypoints), dtype=np.float32).reshape(-1, 4),
        descriptors=np.asarray(descriptors.data, dtype=np.uint8).reshape(-1, 128),
    )
