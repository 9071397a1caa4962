"""Benchmark modes: how big the scenes, maps and query sets are (smoke: minutes, quick: the one to read, full: hours
on a CPU). Every value can be overridden on the command line of ``benchmarks.run``.

Quick mode: scenes synthetic (10 queries), two of the held-out family (heldout-room, heldout-orbit: 12 each), fox
(all 17), fern (its 3), lego (10), fixed in ``QUICK_SCENES`` (the rest of the held-out family runs in full mode only,
so quick mode does not grow with it); conditions original, lighting, blur, lowlight, plus relit and novel-view for the
generated scenes; methods crossfire, prior and the two peers (sfm-sift, sfm-sift-lowpeak). **The render-loop methods
(sift, photometric) are dropped from quick mode**: they take 8-40 s per query, hours over every query and condition
(``--methods`` brings them back).

Its budget on 2 idle cores: six 800-iteration maps of 3-10 min each (about 30 min), each map's index (1-3 min), and
about 330 query-condition pairs at about 0.5-1 s for crossfire and well under 1 s for each peer: under an hour in
all. The measured wall time of the last quick run is in BENCHMARKS.md (``run.json`` has it per scene). With another
job on the CPU everything takes several times longer: torch's two threads then wait on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from benchmarks.scenes import SceneSizes

QUICK_SCENES = ("synthetic", "heldout-room", "heldout-orbit", "fox", "fern", "lego")
"""The scenes of quick (and smoke) mode: fixed, so that the held-out family can grow without quick mode growing."""


@dataclass(frozen=True)
class ModeSettings:
    """Everything a mode fixes."""

    sizes: SceneSizes
    """Scene sizes and queries per scene."""
    iterations: int
    """Training iterations of each map."""
    conditions: Tuple[str, ...] = ("original", "lighting")
    """Query conditions (``benchmarks.lighting.CONDITIONS``, plus ``relit`` for the generated scenes)."""
    methods: Optional[Tuple[str, ...]] = None
    """Methods run by default (None: all of ``benchmarks.localize.ALL_METHODS``)."""
    train_args: Tuple[str, ...] = ()
    """Extra ns-train arguments for every map."""
    matcher_options: Dict[str, Tuple[Tuple[str, Any], ...]] = field(default_factory=dict)
    """Per method, (field, value) pairs of its matcher config (ns-localize's ``--matcher.<field>``); defaults otherwise."""
    scenes: Optional[Tuple[str, ...]] = None
    """Scenes run when ``--scenes`` is not given (None: ``benchmarks.scenes.DEFAULT_SCENES``, the whole held-out
    family included)."""
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
        scenes=QUICK_SCENES,
        description="harness check only: 30-iteration maps, 1 query per scene; the figures mean nothing",
    ),
    "quick": ModeSettings(
        sizes=SceneSizes(
            num_queries=17,
            scene_num_queries=(("synthetic", 10), ("lego", 10)),
            synthetic_size=(160, 120),
            synthetic_num_train=40,
            fox_downscale=8,
        ),
        iterations=800,
        conditions=("original", "lighting", "blur", "lowlight", "relit", "novel-view"),
        methods=("crossfire", "prior", "sfm-sift", "sfm-sift-lowpeak"),
        scenes=QUICK_SCENES,
        description="10-17 queries per scene (fern 3), 800-iteration crossfire-lite maps, images of 100 to 250 px, "
        "no render-loop methods (sift, photometric)",
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
        conditions=("original", "lighting", "blur", "lowlight", "relit", "novel-view"),
        description="10 queries per scene (fern: 3; the held-out family, all of it, 12), 5000-iteration maps, "
        "images of 200 to 640 px",
    ),
}
"""The three modes."""
