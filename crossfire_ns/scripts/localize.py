"""ns-localize: 6-DoF poses for a folder of query images against a trained crossfire map.

    ns-localize --load-config RUN/config.yml --query-dir DIR --output-dir OUT

Outputs (written atomically): poses.json (nerfstudio transforms format, original data frame),
results.csv (one row per query), summary.json (medians, recalls, timing, counts), errors.png.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple

import tyro
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from crossfire_ns.localize.localizer import LocalizerConfig
from crossfire_ns.localize.priors import RetrievalScore

PriorKind = Literal["retrieval", "poses", "sequential"]


class LocalizeError(RuntimeError):
    """A problem with the command's inputs that stops the whole run (the message says how to fix it)."""


@dataclass
class Localize:
    """Localize every image of a folder against a trained crossfire map."""

    load_config: Path
    """config.yml of a crossfire run (written by ns-train under outputs/<experiment>/<method>/<timestamp>/)."""
    query_dir: Path
    """Folder of query images (png/jpg); an optional transforms.json gives intrinsics and ground truth."""
    output_dir: Path
    """Where poses.json, results.csv, summary.json and errors.png go."""
    localizer: LocalizerConfig = field(default_factory=LocalizerConfig)
    """Matcher and search settings."""
    prior: PriorKind = "retrieval"
    """Coarse prior: retrieval of training views (default), a poses file, or the previous estimate (sequential)."""
    retrieval: RetrievalScore = "matches"
    """How retrieval ranks training views: count of mutual-nearest-neighbour CNN feature matches (robust to
    lighting) or gem (cosine of GeM-pooled global descriptors; faster, weaker)."""
    poses_file: Optional[Path] = None
    """With --prior poses: a transforms.json whose frames give a prior transform_matrix (original frame) per file_path."""
    data: Optional[Path] = None
    """Training data folder, if it moved since training (the map needs its training cameras and images)."""
    fx: Optional[float] = None
    """Query focal length x (pixels); overrides transforms.json. Without any intrinsics the training camera is used."""
    fy: Optional[float] = None
    """Query focal length y (pixels); defaults to fx."""
    cx: Optional[float] = None
    """Principal point x (pixels, pixel centres at +0.5); defaults to width / 2."""
    cy: Optional[float] = None
    """Principal point y (pixels); defaults to height / 2."""
    scene_extent: Optional[float] = None
    """Scene size (original units) that recall thresholds scale with; default: diagonal of the training cameras' box."""
    recall_thresholds: Tuple[Tuple[float, float], ...] = ((0.01, 1.0), (0.02, 2.0), (0.05, 5.0))
    """Recall thresholds as (fraction of scene extent, degrees)."""
    overlays: bool = False
    """Also write overlays/<query>.png: the query beside the map rendered at its estimate."""
    max_queries: Optional[int] = None
    """Only the first N queries (quick checks)."""

    def main(self) -> int:
        from crossfire_ns.localize.run import run_localization

        try:
            return run_localization(self)
        except LocalizeError as err:
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print(f"[bold red]ns-localize: {err}")
            return 2


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


def entrypoint() -> None:
    # nerfstudio 1.1.5 indexes tensors in a way torch 2.14 warns about on every render; it is harmless.
    warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
    tyro.extras.set_accent_color("bright_yellow")
    sys.exit(tyro.cli(Localize).main())


def get_parser_fn():
    return tyro.extras.get_parser(Localize)


if __name__ == "__main__":
    entrypoint()
