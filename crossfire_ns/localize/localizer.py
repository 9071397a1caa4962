"""One image to one pose against a loaded map, with the method chosen by its config.

Poses here live in nerfstudio's normalised frame (camera-to-world, OpenGL); converting to and from the data's
original frame is the caller's business (``CrossfireMap.to_original`` / ``to_normalized``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from crossfire_ns.localize.matchers import CrossfireMatcherConfig, MatcherConfig, PoseEstimate
from crossfire_ns.localize.render import MapRenderer


class Localizer:
    """Estimates query poses against one trained model and counts the renders each costs."""

    def __init__(self, model, config: MatcherConfig | None = None, crossfire_map=None) -> None:
        self.model = model
        self.config = config if config is not None else CrossfireMatcherConfig()
        self.renderer = MapRenderer(model, descriptors=self.config.renders_descriptors)
        self.matcher = self.config.setup(model=model, renderer=self.renderer)
        self.matcher.crossfire_map = crossfire_map
        if isinstance(self.config, CrossfireMatcherConfig) and crossfire_map is None:
            raise ValueError("the crossfire method matches against the map index: give the loaded map (crossfire_map)")

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        """Pose of ``image`` (H, W, 3 uint8, undistorted) with intrinsics ``K`` from the given priors."""
        renders0, seconds0 = self.renderer.num_renders, self.renderer.seconds
        estimate = self.matcher.estimate(image, K, priors)
        estimate.num_renders = self.renderer.num_renders - renders0
        estimate.render_seconds = self.renderer.seconds - seconds0
        return estimate
