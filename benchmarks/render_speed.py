"""Seconds per render of a trained map: the viewer's per-frame path against localization's plain render path.

    python -m benchmarks.render_speed --load-config RUN/config.yml [--widths 80 160] [--repeats 5]

``viewer``: ``get_outputs_for_camera_ray_bundle``, which adds the viewer's ``descriptor_pca`` and
``descriptor_similarity`` to nerfacto's outputs and the descriptor field (what every ns-localize render cost before
the plain path); ``plain``: ``render_for_localization`` without the descriptor field (the rendered-rgb and sift
matchers); ``plain+field``: with it (the field-descriptor matcher). Renders at training cameras, interleaved so that
machine noise hits every path alike; medians printed and written as JSON.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
import tyro
from rich.console import Console
from rich.table import Table

from crossfire_ns.io.atomic import write_json_atomic
from crossfire_ns.localize.render import make_camera
from crossfire_ns.map import load_map

CONSOLE = Console()
PATHS = ("viewer", "plain", "plain+field")


@dataclass
class RenderSpeed:
    load_config: Path
    """config.yml of a trained crossfire map."""
    widths: List[int] = field(default_factory=lambda: [80, 160])
    """Render widths (height follows the training camera's aspect); ns-localize's coarse and refinement widths."""
    repeats: int = 5
    """Renders per path and width (at successive training cameras)."""
    output: Optional[Path] = None
    """Also write the figures here as JSON."""

    def main(self) -> Dict[str, Dict[str, float]]:
        crossfire_map = load_map(self.load_config)
        model = crossfire_map.model
        cams = crossfire_map.train_cameras
        full_w, full_h = int(cams.width[0]), int(cams.height[0])
        renders = {
            "viewer": lambda bundle: model.get_outputs_for_camera_ray_bundle(bundle),
            "plain": lambda bundle: model.render_for_localization(bundle, descriptors=False),
            "plain+field": lambda bundle: model.render_for_localization(bundle, descriptors=True),
        }
        report: Dict[str, Dict[str, float]] = {}
        table = Table(title=f"Seconds per render, {self.load_config} ({torch.get_num_threads()} threads)")
        for column in ("width", *PATHS, "plain vs viewer"):
            table.add_column(column)
        for width in self.widths:
            height = max(1, round(full_h * width / full_w))
            seconds: Dict[str, List[float]] = {name: [] for name in PATHS}
            for repeat in range(self.repeats + 1):  # the first round warms up and is not counted
                index = repeat % len(cams)
                K = crossfire_map.training_intrinsics(width, height, index)
                camera = make_camera(crossfire_map.train_c2w[index], K, width, height).to(model.device)
                bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
                for name in PATHS:
                    start = time.perf_counter()
                    with torch.no_grad():
                        renders[name](bundle)
                    if repeat > 0:
                        seconds[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(values) for name, values in seconds.items()}
            report[f"{width}x{height}"] = medians
            table.add_row(
                f"{width}x{height}",
                *(f"{medians[name]:.3f}" for name in PATHS),
                f"{medians['plain'] / medians['viewer']:.2f}x",
            )
        CONSOLE.print(table)
        if self.output is not None:
            write_json_atomic(self.output, {"config": str(self.load_config), "median_seconds": report})
        return report


if __name__ == "__main__":
    tyro.cli(RenderSpeed).main()
