"""Benchmark modes: how big the scenes, maps and query sets are (smoke: minutes, quick: about 30 min on 2 CPU
cores, full: hours on a CPU). Every value can be overridden on the command line of ``benchmarks.run``.

Quick mode's budget on 2 idle cores, from per-iteration and per-query costs measured on this machine: training
4 maps x 800 iterations is about 14 min (0.15-0.4 s per iteration depending on image size; fox's distortion
costs 70% more per ray), localization about 14 min (2 conditions x 3 queries x about 30 s for the four map
methods together, most of it the photometric baseline, plus worker start-up and the peer's maps). With
another job on the CPU everything takes several times longer: torch's two threads then wait on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from benchmarks.scenes import SceneSizes


@dataclass(frozen=True)
class ModeSettings:
    """Everything a mode fixes."""

    sizes: SceneSizes
    """Scene sizes and queries per scene."""
    iterations: int
    """Training iterations of each map."""
    conditions: Tuple[str, ...] = ("original", "lighting")
    """Query conditions (``benchmarks.lighting.CONDITIONS``, plus ``relit`` for the synthetic scene)."""
    train_args: Tuple[str, ...] = ()
    """Extra ns-train arguments for every map."""
    matcher_options: Dict[str, Tuple[Tuple[str, Any], ...]] = field(default_factory=dict)
    """Per method, (field, value) pairs of its matcher config (ns-localize's ``--matcher.<field>``); defaults otherwise."""
    description: str = ""
    """One line for the report."""
    notes: Dict[str, str] = field(default_factory=dict)


MODES: Dict[str, ModeSettings] = {
    "smoke": ModeSettings(
        sizes=SceneSizes(
            num_queries=1, synthetic_size=(80, 60), synthetic_num_train=16, fox_downscale=16, lego_size=64
        ),
        iterations=30,
        train_args=("--pipeline.model.descriptor-loss-start-step", "10"),
        matcher_options={"photometric": (("steps", 10),)},
        description="harness check only: 30-iteration maps, 1 query per scene; the figures mean nothing",
    ),
    "quick": ModeSettings(
        sizes=SceneSizes(num_queries=3, synthetic_size=(160, 120), synthetic_num_train=40, fox_downscale=8),
        iterations=800,
        description="3 queries per scene, 800-iteration crossfire-lite maps, images of 100 to 250 px",
    ),
    "full": ModeSettings(
        sizes=SceneSizes(
            num_queries=10,
            synthetic_size=(160, 120),
            synthetic_num_train=40,
            fox_downscale=4,
            lego_size=200,
            fern_images="images_8",
        ),  # fmt: skip
        iterations=5000,
        conditions=("original", "lighting", "relit"),
        description="10 queries per scene (fern: 3), 5000-iteration maps, images of 200 to 500 px",
    ),
}
"""The three modes."""
