"""ns-localize: 6-DoF poses for a folder of query images against a trained crossfire map.

    ns-localize --load-config RUN/config.yml --query-dir DIR --output-dir OUT [matcher:sift] [--matcher.top-k 5]

Outputs (written atomically): poses.json (nerfstudio transforms format, original data frame),
results.csv (one row per query), summary.json (medians, recalls, timing, counts), errors.png,
results_hloc.txt (hloc's format) and trajectory_tum.txt (TUM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

import tyro

from crossfire_ns.errors import CrossfireInputError
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

    def main(self) -> int:
        from nerfstudio.utils.rich_utils import CONSOLE

        try:
            inputs = read_inputs(self.query_dir, self.prior, self.poses_file, self.max_queries)
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


def entrypoint() -> None:
    run(Localize)


def get_parser_fn():
    return tyro.extras.get_parser(Localize, config=TYRO_CONFIG)


if __name__ == "__main__":
    entrypoint()
