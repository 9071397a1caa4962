"""The prior-only baseline: the top-1 prior, unchanged. Every other method must beat it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Type

import numpy as np

from crossfire_ns.localize.matchers.base import Matcher, MatcherConfig, PoseEstimate


@dataclass
class PriorMatcherConfig(MatcherConfig):
    """The top-1 prior returned as the pose (no rendering, no matching)."""

    _target: Type = field(default_factory=lambda: PriorMatcher)


class PriorMatcher(Matcher):
    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        if not priors:
            return PoseEstimate(success=False, message="prior only: no prior")
        return PoseEstimate(success=True, c2w=priors[0], message="prior only")
