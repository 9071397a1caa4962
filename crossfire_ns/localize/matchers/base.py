"""The interface every method of ns-localize shares: a query image, its intrinsics and coarse priors in, a pose
estimate out, with the map reached only through a renderer.

Each method is a ``MatcherConfig`` (its own options, chosen by name on the command line) whose ``setup`` builds the
``Matcher``, as nerfstudio's configs build their classes. Feature-based methods share the render -> match -> PnP loop
of ``feature.FeatureMatcher`` and only say how a query and a render are matched; the prior-only and photometric
baselines implement ``estimate`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
from nerfstudio.configs.base_config import InstantiateConfig

from crossfire_ns.localize.render import MapRenderer


@dataclass
class PoseEstimate:
    """The outcome for one query, in the normalised frame."""

    success: bool
    c2w: Optional[np.ndarray] = None
    num_inliers: int = 0
    num_matches: int = 0
    reprojection_error_px: float = float("nan")
    message: str = ""
    num_renders: int = 0
    render_seconds: float = 0.0
    history: List[int] = field(default_factory=list)
    """Inlier counts of every round, for diagnosis."""
    seconds_retrieval: float = 0.0
    """Time spent choosing the priors (set by the caller that retrieved them)."""
    seconds_coarse: float = 0.0
    """Time spent finding the coarse pose."""
    seconds_refine: float = 0.0
    """Time spent refining it (and on the final estimate)."""
    confidence: float = float("nan")
    """How sure the method is that the pose is right (0..1 where the method estimates it; NaN otherwise)."""
    diagnostics: Dict[str, Any] = field(default_factory=dict)
    """Method-specific figures behind the estimate (for calibration and reports)."""
    covariance: Optional[np.ndarray] = None
    """6x6 covariance of the pose from the final PnP's inliers (``pnp.pose_covariance``: world rotation vector, then
    camera centre; normalised frame); None where the method has none."""


@dataclass
class MatcherConfig(InstantiateConfig):
    """Options of one localization method; ``setup(model=..., renderer=...)`` builds it."""

    _target: Type = field(default_factory=lambda: Matcher)

    @property
    def num_priors(self) -> int:
        """How many coarse priors (retrieved training views) the method uses."""
        return 1

    @property
    def renders_descriptors(self) -> bool:
        """Whether the method reads the descriptor field from renders (otherwise renders skip it)."""
        return False


class Matcher:
    """One localization method on one map."""

    crossfire_map = None
    """The loaded map (``crossfire_ns.map.CrossfireMap``), for methods that read more than renders (the map index);
    set by ``Localizer``."""

    def __init__(self, config: MatcherConfig, model, renderer: MapRenderer) -> None:
        self.config = config
        self.model = model
        self.renderer = renderer

    def warm_up(self) -> None:
        """Build what the first query would otherwise wait for (nothing by default)."""

    def leave_one_out(self, max_side: int) -> List[Tuple[float, float]]:
        """Per training view localized without its own share of the map (at most ``max_side`` px a side, as queries
        are), its first-order ``d2`` to its own pose and its inliers' mean reprojection error: how far the map's
        depth widens a pose (``pnp.CovarianceWidening.leave_one_out_ratio``). Empty: not measured (by default)."""
        return []

    def extra_retrieval_views(self) -> Optional[Tuple[List[Any], np.ndarray]]:
        """Views beyond the training views that retrieval should rank: ((H, W, 3) uint8 images, (M, 4, 4) poses in
        the normalised frame); None: the training views only."""
        return None

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        """Pose of ``image`` (H, W, 3 uint8, undistorted) with intrinsics ``K`` from ``priors`` (4x4 c2w, normalised
        frame, best first)."""
        raise NotImplementedError
