"""SIFT features with COLMAP's CPU implementation (pycolmap), as hloc's ``sift`` configuration extracts them,
optionally on a contrast-normalised grey image (CLAHE, OpenCV) for dark and low-contrast images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np


@dataclass
class SiftConfig:
    """COLMAP SIFT settings (the defaults are COLMAP's, except the feature cap)."""

    max_num_features: int = 4096
    """Keep at most this many keypoints per image (strongest first)."""
    first_octave: int = -1
    """-1 upsamples the image once first: more keypoints on the small images of a CPU benchmark."""
    peak_threshold: float = 0.02 / 3
    """Difference-of-Gaussians peak threshold (COLMAP's default); lower keeps weaker, low-contrast keypoints."""
    contrast: Literal["none", "clahe"] = "none"
    """none: SIFT on the grey image as it is (COLMAP's way). clahe: contrast-limited adaptive histogram
    equalisation (OpenCV) of the grey image first, for map and query images alike, so dark and flat images
    get keypoints above the peak threshold again."""
    clahe_clip_limit: float = 2.0
    """CLAHE: contrast limit per tile (OpenCV's clipLimit; higher equalises harder, and amplifies noise more)."""
    clahe_tiles: int = 4
    """CLAHE: the image is equalised in tiles x tiles regions (4 suits the 100-250 px images of the benchmark)."""


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


@dataclass
class Extractor:
    """A pycolmap SIFT extractor and the settings that prepare its input."""

    sift: Any
    """``pycolmap.FeatureExtractor`` (CPU)."""
    config: SiftConfig
    """What it was made with (``extract`` reads ``contrast`` from it)."""


def make_extractor(config: Optional[SiftConfig] = None) -> Extractor:
    """A pycolmap SIFT extractor on the CPU (``SiftConfig()`` by default)."""
    import pycolmap

    config = config or SiftConfig()

    options = pycolmap.FeatureExtractionOptions()
    options.use_gpu = False
    options.sift.max_num_features = config.max_num_features
    options.sift.first_octave = config.first_octave
    options.sift.peak_threshold = config.peak_threshold
    return Extractor(pycolmap.FeatureExtractor.create(options, pycolmap.Device.cpu), config)


def grey_image(rgb: np.ndarray, config: Optional[SiftConfig] = None) -> np.ndarray:
    """(H, W) uint8 grey (ITU-R 601 luma, as COLMAP converts) of an RGB or grey image, CLAHE'd if configured."""
    config = config or SiftConfig()
    rgb = np.asarray(rgb)
    if rgb.ndim == 3:
        rgb = np.round(rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
    grey = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if config.contrast == "clahe":
        import cv2

        tiles = (int(config.clahe_tiles), int(config.clahe_tiles))
        grey = cv2.createCLAHE(clipLimit=float(config.clahe_clip_limit), tileGridSize=tiles).apply(grey)
    return grey


def extract(extractor: Extractor, rgb: np.ndarray) -> Features:
    """Features of an (H, W, 3) uint8 RGB image (see ``grey_image``), with the extractor's ``SiftConfig``."""
    import pycolmap

    keypoints, descriptors = extractor.sift.extract_from_uint8_array(grey_image(rgb, extractor.config))
    return Features(
        keypoints=np.asarray(pycolmap.keypoints_to_matrix(keypoints), dtype=np.float32).reshape(-1, 4),
        descriptors=np.asarray(descriptors.data, dtype=np.uint8).reshape(-1, 128),
    )
