"""Lighting invariance of the scene CNN: does a view's feature under changed light match the same view's feature
under the map's light at the same pixel?

    python -m benchmarks.lighting_invariance --load-config RUN/config.yml --changed-dir Q --reference-dir R
    python -m benchmarks.lighting_invariance --load-config RUN/config.yml --changed-dir SCENE/queries --bundled-scene SCENE

R and Q are query folders (``ns-localize``'s layout) with the same views pixel for pixel, paired by file name: a query folder and its relit, blurred or
low-light copy (``benchmarks.lighting``), or, with ``--bundled-scene``, a generated scene's relit queries and the
same poses rendered again under its training lighting (written once to ``SCENE/queries-training-light``). No
radiance field is involved: this isolates what the CNN's augmentation buys. Mutual nearest neighbours between the
two feature maps (all cells); a match is correct within 2 px. Also the share of all cells whose nearest
neighbour is within 2 px, and the median cosine similarity of the two features at the same pixel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.table import Table

from crossfire_ns.localize.matching import mutual_nearest_neighbours

CONSOLE = Console()


@torch.no_grad()
def feature_invariance(
    encode: Callable[[torch.Tensor], torch.Tensor],
    reference: np.ndarray,
    changed: np.ndarray,
    tolerance_px: float = 2.0,
) -> Dict[str, float]:
    """Compare the features of two pixel-aligned (H, W, 3) uint8 images (mutual nearest neighbours as the localizer
    matches, ``localize.matching``); ``encode`` maps (B, 3, H, W) in [0, 1]
    to unit-norm (B, D, h, w) features (h = H / stride)."""
    if reference.shape != changed.shape:
        raise ValueError(f"the two images differ in size: {reference.shape} and {changed.shape}")
    images = torch.from_numpy(np.stack([reference, changed])).float().div(255.0).permute(0, 3, 1, 2)
    features = encode(images)
    dim, h, w = features.shape[1:]
    stride = reference.shape[1] / w
    ref, chg = features[0].reshape(dim, -1).T, features[1].reshape(dim, -1).T

    def correct(changed_cells: torch.Tensor, reference_cells: torch.Tensor) -> torch.Tensor:
        offset = torch.stack([reference_cells // w - changed_cells // w, reference_cells % w - changed_cells % w], 1)
        return offset.float().norm(dim=1) * stride <= tolerance_px

    mutual_chg, mutual_ref, _ = mutual_nearest_neighbours(chg, ref, min_similarity=-1.0)
    mutual_ok = correct(mutual_chg, mutual_ref)
    nearest_ok = correct(torch.arange(len(chg)), (chg @ ref.T).argmax(1))
    return {
        "mutual": len(mutual_chg),
        "mutual_correct": float(mutual_ok.float().mean()) if len(mutual_chg) else float("nan"),
        "nearest_correct": float(nearest_ok.float().mean()),
        "same_pixel_similarity": float((ref * chg).sum(1).median()),
    }


def render_training_light_queries(scene_dir: Path) -> Path:
    """The generated scene's query poses under its training lighting, as ``scene_dir/queries-training-light`` (the
    same file names as ``queries/``); reused when already there."""
    from crossfire_ns.io.atomic import write_json_atomic, write_png_atomic
    from crossfire_ns.synthetic import build_scene
    from crossfire_ns.synthetic.config import Lighting, PinholeIntrinsics, SyntheticSceneConfig
    from crossfire_ns.synthetic.render import render_view, to_uint8

    meta = json.loads((scene_dir / "scene.json").read_text())
    target = scene_dir / "queries-training-light"
    done = target / "transforms.json"  # the queries' own, written last: the folder is a query set
    if done.is_file():
        return target
    config = SyntheticSceneConfig(**meta["config"])
    scene = build_scene(config)
    intrinsics = PinholeIntrinsics.from_fov(config.width, config.height, config.fov_x_deg)
    lighting = Lighting(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["lighting"]["train"].items()})
    transforms = json.loads((scene_dir / "queries" / "transforms.json").read_text())
    frames = transforms["frames"]
    for frame in frames:
        rgb, _ = render_view(np.asarray(frame["transform_matrix"]), intrinsics, lighting, scene, config.supersample)
        write_png_atomic(target / frame["file_path"], to_uint8(rgb))
    write_json_atomic(done, transforms)
    return target


@dataclass
class LightingInvariance:
    load_config: Path
    """config.yml of the trained crossfire map (its CNN is what is measured)."""
    changed_dir: Path
    """Images under the changed condition (a query folder with transforms.json, or any folder of images)."""
    reference_dir: Optional[Path] = None
    """The same views, pixel for pixel and with the same file names, under the map's lighting."""
    bundled_scene: Optional[Path] = None
    """A generated scene's folder: the reference is its queries rendered again under its training lighting."""
    output_json: Optional[Path] = None
    """Also write the per-view figures here."""

    def main(self) -> dict:
        from crossfire_ns.io.atomic import write_json_atomic
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.map import load_map

        if (self.reference_dir is None) == (self.bundled_scene is None):
            raise SystemExit("Pass exactly one of --reference-dir and --bundled-scene.")
        reference_dir = self.reference_dir or render_training_light_queries(self.bundled_scene)
        model = load_map(self.load_config).model.eval()
        changed, _ = load_query_set(self.changed_dir)
        references = {Path(q.file_path).name: q for q in load_query_set(reference_dir)[0]}
        pairs = [(references[Path(q.file_path).name], q) for q in changed if Path(q.file_path).name in references]
        if not pairs:
            raise SystemExit(f"No image of {self.changed_dir} has a namesake under {reference_dir}.")
        table = Table(title=f"CNN features, {self.changed_dir} against {reference_dir}")
        for col in ("view", "mutual NN", "mutual within 2 px", "all cells: NN within 2 px", "same-pixel similarity"):
            table.add_column(col)
        rows: List[dict] = []

        def encode(chw: torch.Tensor) -> torch.Tensor:  # what ns-localize runs on a query
            return model.encode_images(chw.permute(0, 2, 3, 1)).cpu()

        for reference, query in pairs:
            figures = feature_invariance(encode, read_query_image(reference), read_query_image(query))
            name = Path(query.file_path).name
            rows.append({"view": name, **figures})
            table.add_row(
                name,
                str(figures["mutual"]),
                f"{figures['mutual_correct']:.1%}",
                f"{figures['nearest_correct']:.1%}",
                f"{figures['same_pixel_similarity']:.3f}",
            )
        summary = {
            "mutual_correct": float(np.nanmean([r["mutual_correct"] for r in rows])),
            "nearest_correct": float(np.mean([r["nearest_correct"] for r in rows])),
            "same_pixel_similarity": float(np.median([r["same_pixel_similarity"] for r in rows])),
        }
        table.add_row(
            "mean",
            "",
            f"{summary['mutual_correct']:.1%}",
            f"{summary['nearest_correct']:.1%}",
            f"{summary['same_pixel_similarity']:.3f} (median)",
        )
        CONSOLE.print(table)
        result = {"per_view": rows, **summary}
        if self.output_json is not None:
            write_json_atomic(self.output_json, result)
        return result


if __name__ == "__main__":
    tyro.cli(LightingInvariance).main()
