"""The methods of ns-localize, one module each, chosen by name (``matcher:<name>`` on the command line).

``crossfire`` (default) runs the index path (no render per query); ``crossfire-render`` and ``sift`` share the render
-> match -> PnP loop of ``feature``; ``photometric`` and ``prior`` are the baselines. Every config's
``setup(model=..., renderer=...)`` builds its ``Matcher``. ``PRESETS`` are named settings of a method (hloc's
``confs``), each a subcommand of its own.
"""

from __future__ import annotations

from typing import Dict, Type, Union

import tyro
from typing_extensions import Annotated

from crossfire_ns.localize.matchers.base import Matcher, MatcherConfig, PoseEstimate
from crossfire_ns.localize.matchers.crossfire import CrossfireMatcher, CrossfireMatcherConfig, RenderRoundsConfig
from crossfire_ns.localize.matchers.crossfire_render import CrossfireRenderMatcher, CrossfireRenderMatcherConfig
from crossfire_ns.localize.matchers.feature import Correspondences, FeatureMatcher, FeatureMatcherConfig
from crossfire_ns.localize.matchers.photometric import PhotometricMatcher, PhotometricMatcherConfig
from crossfire_ns.localize.matchers.prior import PriorMatcher, PriorMatcherConfig
from crossfire_ns.localize.matchers.sift import SiftMatcher, SiftMatcherConfig
from crossfire_ns.localize.verify import VerifyConfig

MATCHER_CONFIGS: Dict[str, Type[MatcherConfig]] = {
    "crossfire": CrossfireMatcherConfig,
    "crossfire-render": CrossfireRenderMatcherConfig,
    "sift": SiftMatcherConfig,
    "photometric": PhotometricMatcherConfig,
    "prior": PriorMatcherConfig,
}
"""Method name -> its config class, in the order ``--help`` lists them."""

PRESETS: Dict[str, MatcherConfig] = {
    "crossfire-calibration": CrossfireMatcherConfig(
        verify=VerifyConfig(report_unconfirmed=True, diagnostic_figures=True)
    ),
    "crossfire-render-check": CrossfireMatcherConfig(render=RenderRoundsConfig(check=True)),
}
"""Named settings of a method: ``crossfire-calibration`` reports every pose found with every figure behind it (the
floors still decide the second pass; ``benchmarks.confidence``), ``crossfire-render-check`` adds the render agreement
at the final pose (one render)."""

AnyMatcherConfig = Union[
    Annotated[CrossfireMatcherConfig, tyro.conf.subcommand("crossfire")],
    Annotated[CrossfireRenderMatcherConfig, tyro.conf.subcommand("crossfire-render")],
    Annotated[SiftMatcherConfig, tyro.conf.subcommand("sift")],
    Annotated[PhotometricMatcherConfig, tyro.conf.subcommand("photometric")],
    Annotated[PriorMatcherConfig, tyro.conf.subcommand("prior")],
    Annotated[
        CrossfireMatcherConfig,
        tyro.conf.subcommand("crossfire-calibration", default=PRESETS["crossfire-calibration"]),
    ],
    Annotated[
        CrossfireMatcherConfig,
        tyro.conf.subcommand("crossfire-render-check", default=PRESETS["crossfire-render-check"]),
    ],
]
"""A tyro field of this type is a subcommand per method, each with its own options."""


def matcher_name(config: MatcherConfig) -> str:
    """The method name of a matcher config (``crossfire``, ``sift``, ...)."""
    for name, cls in MATCHER_CONFIGS.items():
        if type(config) is cls:
            return name
    raise ValueError(f"{type(config).__name__} is not a registered matcher config")


__all__ = [
    "MATCHER_CONFIGS",
    "AnyMatcherConfig",
    "Correspondences",
    "CrossfireMatcher",
    "CrossfireMatcherConfig",
    "CrossfireRenderMatcher",
    "CrossfireRenderMatcherConfig",
    "PRESETS",
    "FeatureMatcher",
    "FeatureMatcherConfig",
    "Matcher",
    "MatcherConfig",
    "PhotometricMatcher",
    "PhotometricMatcherConfig",
    "PoseEstimate",
    "PriorMatcher",
    "PriorMatcherConfig",
    "SiftMatcher",
    "SiftMatcherConfig",
    "matcher_name",
]
