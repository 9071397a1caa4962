"""Which SIFT peer is fair on dark images: COLMAP's defaults, CLAHE on the grey image, a lower peak threshold, or
both, on the bundled scene's queries under the benchmark's conditions. No radiance field is needed: the peer is
SIFT + triangulation from the known poses, seconds per run.

    python -m benchmarks.peer_contrast [--output-dir outputs/peer-contrast] [--num-queries 10]

Prints one row per (condition, variant): localized, within 1%/1 deg and 5%/5 deg of the scene, median rotation
error, mean keypoints of the map's views, seconds per query. The benchmark's ``sfm-sift-lowpeak`` row is the variant
this chose: the low peak threshold (benchmarks/README.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Tuple

import tyro
from rich.console import Console
from rich.table import Table

from benchmarks.lighting import CONDITIONS, DEFAULT_SEED, relight_folder
from benchmarks.peer.features import SiftConfig
from benchmarks.peer.pipeline import MapConfig, SfmPeer
from benchmarks.scenes import SceneSizes, prepare_scene

VARIANTS: Dict[str, SiftConfig] = {
    "default": SiftConfig(),
    "clahe": SiftConfig(contrast="clahe"),
    "low-peak": SiftConfig(peak_threshold=0.02 / 3 / 4),
    "clahe+low-peak": SiftConfig(contrast="clahe", peak_threshold=0.02 / 3 / 4),
}
"""The peer variants compared (the low peak threshold is a quarter of COLMAP's default)."""


@dataclass
class PeerContrast:
    """Compare SIFT peer variants on the bundled scene under dark, blurred and relit queries."""

    output_dir: Path = Path("outputs/peer-contrast")
    """Where the scene, the query conditions and each variant's outputs go."""
    num_queries: int = 10
    """Queries of the bundled scene (its 10 by default)."""
    conditions: Tuple[str, ...] = ("original", "relit", "lighting", "blur", "lowlight", "relit+lowlight")
    """Query sets: the benchmark's conditions on the original queries, relit (the scene's own changed lighting) and
    relit+lowlight (the low-light change on top of the relit queries: the darkest set)."""

    def main(self) -> int:
        console = Console()
        out = Path(self.output_dir)
        sizes = SceneSizes(num_queries=self.num_queries)
        scene = prepare_scene("synthetic", out / "scene", out, sizes, with_relit=True)
        folders = {"original": scene.query_dir, "relit": scene.extra_conditions["relit"]}
        for condition in self.conditions:
            if condition in folders:
                continue
            base, _, change = condition.rpartition("+")
            source = folders[base or "original"]
            relight_folder(source, out / "queries" / condition, CONDITIONS[change], DEFAULT_SEED)
            folders[condition] = out / "queries" / condition
        table = Table(title="SIFT peer variants on the bundled scene")
        for column in ("condition", "variant", "localized", "1%/1 deg", "5%/5 deg", "median rot (deg)", "keypoints/view",
                       "s/query"):  # fmt: skip
            table.add_column(column)
        for condition in self.conditions:
            for name, sift in VARIANTS.items():
                peer = SfmPeer(
                    train_dir=scene.train_dir,
                    query_dir=folders[condition],
                    output_dir=out / "runs" / condition / name,
                    map_dir=out / "maps" / name,
                    scene_extent=scene.scene_extent,
                    mapping=replace(MapConfig(), sift=sift),
                )
                peer.main()
                summary = _read(peer.output_dir / "summary.json")
                recall = {
                    tuple(r): e["recall"] for r, e in zip(summary["recall_thresholds_relative"], summary["recall"])
                }
                rot = summary["median_rotation_error_deg"]
                table.add_row(
                    condition, name, f"{summary['num_localized']}/{summary['num_queries']}",
                    f"{100 * recall[(0.01, 1.0)]:.0f}%", f"{100 * recall[(0.05, 5.0)]:.0f}%",
                    "-" if rot is None else f"{rot:.3f}", f"{summary['mapping']['mean_keypoints']:.0f}",
                    f"{summary['median_seconds']:.2f}",
                )  # fmt: skip
        console.print(table)
        return 0


def _read(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())


if __name__ == "__main__":
    raise SystemExit(tyro.cli(PeerContrast).main())
