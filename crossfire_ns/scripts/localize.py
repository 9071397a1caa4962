"""ns-localize: 6-DoF poses for a folder of query images against a trained crossfire map.

    ns-localize --load-config RUN/config.yml --query-dir DIR --output-dir OUT [matcher:sift] [--matcher.top-k 5]

Outputs (written atomically): poses.json (nerfstudio transforms format, original data frame),
results.csv (one row per query), summary.json (medians, recalls, timing, counts), errors.png,
results_hloc.txt (hloc's format) and trajectory_tum.txt (TUM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import tyro

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.io.pose_formats import check_rigid
from crossfire_ns.localize.api import MAX_IMAGE_SIDE
from crossfire_ns.localize.folder import DEFAULT_RECALL_THRESHOLDS, localize_folder, prepare_output_dir, read_inputs
from crossfire_ns.localize.matchers import AnyMatcherConfig, CrossfireMatcherConfig
from crossfire_ns.localize.priors import PriorKind, RetrievalScore
from crossfire_ns.localize.run import IntrinsicsFlags
from crossfire_ns.map import load_map
from crossfire_ns.scripts.cli import TYRO_CONFIG, run


@dataclass
class Localize:
    """Localize every image of a folder against a trained crossfire map."""

    load_config: Path
    """config.yml of a crossfire run (ns-train's outputs/<experiment>/<method>/<timestamp>/)."""
    query_dir: Path
    """Query images (png/jpg); a transforms.json there gives intrinsics and ground truth."""
    output_dir: Path
    """Where poses.json, results.csv, summary.json and errors.png go."""
    matcher: AnyMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """The method (each a subcommand with its own options)."""
    prior: PriorKind = "retrieval"
    """Coarse prior: retrieval of training views, a poses file, or the previous estimate."""
    retrieval: RetrievalScore = "matches"
    """Retrieval score: mutual-nearest-neighbour CNN matches, or GeM descriptors (faster, weaker)."""
    poses_file: Optional[Path] = None
    """--prior poses: a transforms.json (original frame) or an hloc results .txt of priors."""
    data: Optional[Path] = None
    """The training data folder, if it moved since training."""
    fx: Optional[float] = None
    """Focal length x (pixels): with it these flags replace every query's intrinsics."""
    fy: Optional[float] = None
    """Query focal length y (pixels); defaults to fx."""
    cx: Optional[float] = None
    """Principal point x (pixel centres at +0.5); defaults to width / 2."""
    cy: Optional[float] = None
    """Principal point y (pixels); defaults to height / 2."""
    scene_extent: Optional[float] = None
    """Scene size for the recall thresholds (default: the training cameras' diagonal)."""
    recall_thresholds: Tuple[Tuple[float, float], ...] = DEFAULT_RECALL_THRESHOLDS
    """Recall thresholds as (fraction of scene extent, degrees)."""
    overlays: bool = False
    """Also write overlays/: each query beside the map rendered at its estimate."""
    max_queries: Optional[int] = None
    """Only the first N queries (quick checks)."""
    max_image_side: int = MAX_IMAGE_SIDE
    """Larger queries are downscaled (never finer than the training camera either)."""
    overwrite: bool = False
    """Start afresh; without it the same run resumes and another run's folder is refused."""

    def check(self) -> List[str]:
        """What is wrong with the flags (each message names its flag); empty when they can be used. The intrinsics
        flags are checked against each image's size as it is read (``check_intrinsics``)."""
        problems = []
        for flag, value in (("--fx", self.fx), ("--fy", self.fy)):
            if value is not None and not (math.isfinite(value) and value > 0):
                problems.append(f"{flag} {value}: a focal length must be a finite number of pixels above 0")
        for flag, value in (("--cx", self.cx), ("--cy", self.cy)):
            if value is not None and not math.isfinite(value):
                problems.append(f"{flag} {value}: must be a finite number of pixels")
        if self.fx is None and any(v is not None for v in (self.fy, self.cx, self.cy)):
            problems.append("--fy/--cx/--cy need --fx (the intrinsics flags replace every query's together)")
        if self.scene_extent is not None and not (math.isfinite(self.scene_extent) and self.scene_extent > 0):
            problems.append(f"--scene-extent {self.scene_extent}: must be a finite length above 0")
        for fraction, degrees in self.recall_thresholds:
            if not (math.isfinite(fraction) and fraction > 0 and math.isfinite(degrees) and degrees > 0):
                problems.append(
                    f"--recall-thresholds ({fraction}, {degrees}): each pair must be a fraction of the scene extent "
                    f"and degrees, both finite and above 0"
                )
        if self.max_queries is not None and self.max_queries < 1:
            problems.append(f"--max-queries {self.max_queries}: must be at least 1 (leave it out for every query)")
        if self.max_image_side < 1:
            problems.append(f"--max-image-side {self.max_image_side}: must be at least 1 pixel")
        if self.poses_file is not None and self.prior != "poses":
            problems.append(f"--poses-file is only read with --prior poses (got --prior {self.prior})")
        return problems

    def main(self) -> int:
        from nerfstudio.utils.rich_utils import CONSOLE

        problems = self.check()
        if problems:
            for problem in problems:
                CONSOLE.print(f"[bold red]ns-localize: {problem}")
            return 2
        try:
            inputs = read_inputs(self.query_dir, self.prior, self.poses_file, self.max_queries)
            check_priors(inputs.prior_poses, self.poses_file)
            prepare_output_dir(self.output_dir, self.overwrite)  # before the map: loading it takes a while
            crossfire_map = load_map(self.load_config, self.data)
            localize_folder(
                crossfire_map,
                inputs,
                self.output_dir,
                matcher=self.matcher,
                prior=self.prior,
                retrieval=self.retrieval,
                intrinsics=None if self.fx is None else IntrinsicsFlags(self.fx, self.fy, self.cx, self.cy),
                scene_extent=self.scene_extent,
                recall_thresholds=self.recall_thresholds,
                overlays=self.overlays,
                max_image_side=self.max_image_side,
                overwrite=self.overwrite,
            )
        except CrossfireInputError as err:
            CONSOLE.print(f"[bold red]ns-localize: {err}")
            return 2
        except KeyboardInterrupt:
            return 130  # what was done is written (localize_folder said so)
        return 0


def check_priors(poses: Dict[str, np.ndarray], poses_file: Optional[Path]) -> None:
    """``CrossfireInputError`` naming the file and the entry when a prior is not a finite rigid pose."""
    for name, c2w in poses.items():
        try:
            check_rigid(c2w, f"{poses_file}: {name!r}")
        except ValueError as err:
            raise CrossfireInputError(
                f"--poses-file {err}. Give camera-to-world poses (rotation and translation)."
            ) from None


def entrypoint() -> None:
    run(Localize)


def get_parser_fn():
    return tyro.extras.get_parser(Localize, config=TYRO_CONFIG)


if __name__ == "__main__":
    entrypoint()
