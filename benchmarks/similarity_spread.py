"""What the viewer's descriptor-similarity map shows, as numbers: does a clicked point light up one spot, and
the same spot from every view?

    python -m benchmarks.similarity_spread --load-config RUN/config.yml

Reference points are opaque pixels of a few training views (the README screenshot's click on view 0 among
them). For each, the field's rendered descriptor there is compared with every pixel of the same view: the
share of pixels above ``--threshold`` similarity (small: one spot lights up). In each other chosen view that
sees the point (it projects inside the image and the rendered depth there agrees within 3%), the most similar
pixel should lie on the point's projection: the share within ``--hit-px`` is "the same spot from every view".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import tyro
from rich.console import Console

CONSOLE = Console()


def spread_and_hits(
    descriptors: list, points: list, depths: list, c2ws: np.ndarray, Ks: list, references: list, threshold: float,
    hit_px: float,
) -> Tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(share above threshold per reference, hit (1/0) per visible (reference, other view) pair).

    ``descriptors[v]`` (h, w, D) unit vectors, ``points[v]`` (h, w, 3), ``depths[v]`` (h, w); ``references`` a
    list of (view, y, x).
    """
    from crossfire_ns.geometry import project_c2w

    spreads, hits = [], []
    for view, y, x in references:
        reference = descriptors[view][y, x]
        spreads.append(float((descriptors[view] @ reference > threshold).mean()))
        point = points[view][y, x][None]
        for other in range(len(descriptors)):
            if other == view:
                continue
            h, w = depths[other].shape
            pixel, distance, in_front = project_c2w(point, c2ws[other], Ks[other])
            u, v = pixel[0]
            if not in_front[0] or not (0 <= u < w and 0 <= v < h):
                continue
            seen = depths[other][int(v), int(u)]
            if abs(seen - distance[0]) > 0.03 * distance[0]:  # occluded, or the depth there is not this point
                continue
            best = np.unravel_index(np.argmax(descriptors[other] @ reference), (h, w))
            hits.append(float(np.hypot(best[1] + 0.5 - u, best[0] + 0.5 - v) <= hit_px))
    return np.array(spreads), np.array(hits)


@dataclass
class SimilaritySpread:
    load_config: Path
    """config.yml of a trained crossfire map."""
    views: Tuple[int, ...] = (0, 5, 10, 15, 20, 25, 30, 35)
    """Training views to render and to take reference points from (out-of-range ones are skipped)."""
    points_per_view: int = 20
    """Random opaque reference pixels per view, plus the screenshot's click on the first view."""
    pick: Tuple[float, float] = (0.3, 0.55)
    """The README screenshot's click (fractions of the image, x and y) on the first view."""
    threshold: float = 0.8
    """Similarity above which a pixel "lights up"."""
    hit_px: float = 3.0
    """The most similar pixel of another view is on the point when it is this close to its projection."""
    seed: int = 0
    output: Optional[Path] = None
    """Also write the figures as JSON here."""

    def main(self) -> dict:
        import torch.nn.functional as F

        from crossfire_ns.localize.render import MapRenderer
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        renderer = MapRenderer(crossfire_map.model, descriptors=True)
        cams = crossfire_map.train_cameras
        views = [v for v in self.views if v < len(cams)]
        descriptors, points, depths, opaque, Ks = [], [], [], [], []
        for v in views:
            width, height = int(cams.width[v]), int(cams.height[v])
            K = crossfire_map.training_intrinsics(width, height, v)
            view = renderer.render(crossfire_map.train_c2w[v], K, width, height)
            descriptors.append(F.normalize(view.descriptor.float(), dim=-1).cpu().numpy())
            points.append(view.points.cpu().numpy())
            depths.append(view.depth[..., 0].cpu().numpy())  # distance along the unit ray: points = o + d * depth
            opaque.append(view.accumulation[..., 0].cpu().numpy() >= 0.9)
            Ks.append(K)
        rng = np.random.default_rng(self.seed)
        h0, w0 = depths[0].shape
        references = [(0, int(self.pick[1] * h0), int(self.pick[0] * w0))]
        for i in range(len(views)):
            ys, xs = np.nonzero(opaque[i])
            for k in rng.choice(len(ys), size=min(self.points_per_view, len(ys)), replace=False):
                references.append((i, int(ys[k]), int(xs[k])))
        c2ws = crossfire_map.train_c2w[views]
        spreads, hits = spread_and_hits(descriptors, points, depths, c2ws, Ks, references, self.threshold, self.hit_px)
        result = {
            "map": str(self.load_config),
            "views": views,
            "references": len(references),
            "screenshot_click_share_above": float(spreads[0]),
            "median_share_above": float(np.median(spreads)),
            "p90_share_above": float(np.quantile(spreads, 0.9)),
            "visible_pairs": int(len(hits)),
            "same_spot_share": float(hits.mean()) if len(hits) else float("nan"),
            "threshold": self.threshold,
            "hit_px": self.hit_px,
        }
        CONSOLE.print(
            f"{len(references)} reference points on {len(views)} views: a median {result['median_share_above']:.2%} of "
            f"pixels above {self.threshold} similarity (90th percentile {result['p90_share_above']:.2%}; the screenshot's "
            f"click {result['screenshot_click_share_above']:.2%}); the most similar pixel of another view is within "
            f"{self.hit_px:g} px of the point in {result['same_spot_share']:.1%} of {len(hits)} visible pairs"
        )
        if self.output is not None:
            self.output.write_text(json.dumps(result, indent=2))
        return result


if __name__ == "__main__":
    tyro.cli(SimilaritySpread).main()
