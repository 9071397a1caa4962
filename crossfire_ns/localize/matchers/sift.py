"""sift: classical SIFT keypoints of the query against those of the RGB rendered at the hypothesis.

The rendered side is lifted to 3D with rendered depth; matches pass Lowe's ratio test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import cv2
import numpy as np

from crossfire_ns.localize.matchers.feature import (
    MIN_ACCUMULATION,
    Correspondences,
    FeatureMatcher,
    FeatureMatcherConfig,
)
from crossfire_ns.localize.render import RenderedView


@dataclass
class SiftMatcherConfig(FeatureMatcherConfig):
    """SIFT of the query against SIFT of the colour rendered at each hypothesis."""

    _target: Type = field(default_factory=lambda: SiftMatcher)
    render_width: int = 160
    """Width of the coarse renders (SIFT needs more pixels than the CNN)."""
    ratio: float = 0.8
    """Lowe's ratio test: the best match must be this much closer than the second best."""


class SiftMatcher(FeatureMatcher):
    """SIFT against renders (Lowe ratio test); no guided matching."""

    config: SiftMatcherConfig

    def __init__(self, config: SiftMatcherConfig, model, renderer) -> None:
        super().__init__(config, model, renderer)
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)

    def _detect(self, image: np.ndarray):
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = self.sift.detectAndCompute(gray, None)
        # OpenCV puts pixel centres at integers; nerfstudio at +0.5.
        pixels = np.array([kp.pt for kp in keypoints], dtype=np.float64).reshape(-1, 2) + 0.5
        return pixels, descriptors

    def prepare_query(self, image: np.ndarray) -> dict:
        pixels, descriptors = self._detect(image)
        return {"pixels": pixels, "descriptors": descriptors}

    def match(self, query: dict, view: RenderedView) -> Correspondences:
        empty = Correspondences(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0))
        rgb = (view.rgb.clamp(0, 1) * 255).byte().cpu().numpy()
        r_pixels, r_desc = self._detect(rgb)
        if query["descriptors"] is None or r_desc is None or len(r_desc) < 2 or len(query["descriptors"]) < 2:
            return empty
        pairs = self.matcher.knnMatch(r_desc, query["descriptors"], k=2)
        good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < self.config.ratio * n.distance]
        if not good:
            return empty
        r_idx = np.array([m.queryIdx for m in good])
        q_idx = np.array([m.trainIdx for m in good])
        height, width = view.depth.shape[:2]
        cols = np.clip(np.floor(r_pixels[r_idx, 0]).astype(int), 0, width - 1)
        rows = np.clip(np.floor(r_pixels[r_idx, 1]).astype(int), 0, height - 1)
        accumulation = view.accumulation[..., 0].cpu().numpy()[rows, cols]
        keep = accumulation > MIN_ACCUMULATION
        points = view.points.cpu().numpy()[rows, cols][keep]
        distances = np.array([m.distance for m in good])[keep]
        return Correspondences(points.astype(np.float64), query["pixels"][q_idx[keep]], -distances)
