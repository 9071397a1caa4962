"""Descriptor quality: do the CNN features of a real held-out image match the descriptors rendered at its
true pose at the right place?

    python -m benchmarks.descriptor_quality --load-config RUN/config.yml --query-dir DIR

For each held-out view (ground-truth pose in DIR/transforms.json) the map renders descriptors and depth at
the true pose; mutual nearest neighbours between them and the encoder's features of the real image give
matches. A match is correct when the rendered point, projected with the true pose, lands within 2 px / 5 px
of the matched query pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

CONSOLE = Console()


def projection_errors(points3d: np.ndarray, points2d: np.ndarray, K: np.ndarray, c2w_norm: np.ndarray) -> np.ndarray:
    """Pixel distance between each matched query pixel and the projection of its 3D point at the true pose."""
    from crossfire_ns.geometry import opengl_c2w_to_opencv_w2c

    R, t = opengl_c2w_to_opencv_w2c(c2w_norm)
    cam = points3d @ R.T + t
    uv = cam[:, :2] / cam[:, 2:3] * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
    return np.linalg.norm(uv - points2d, axis=1)


@dataclass
class DescriptorQuality:
    load_config: Path
    """config.yml of the trained crossfire map."""
    query_dir: Path
    """Held-out views with ground truth (transforms.json with transform_matrix per frame)."""
    min_similarity: float = 0.0
    """Similarity threshold on the mutual nearest neighbours (0: all mutual matches)."""
    max_width: Optional[int] = None
    """Render and match at most this wide (the query is resized); default: the query's own size."""
    source: Literal["field", "rendered-rgb"] = "field"
    """What is matched against the query's CNN features: field (rendered descriptors) or rendered-rgb (the
    CNN's features of the rendered colour)."""
    guided_radius_px: int = 0
    """>0: guided matching within this radius of the true position (what refinement rounds do) instead of
    global mutual nearest neighbours."""

    def main(self) -> dict:
        import cv2

        from crossfire_ns.geometry import scale_intrinsics
        from crossfire_ns.io.queries import load_query_set, read_query_image, undistort_if_needed
        from crossfire_ns.localize.matchers import CrossfireRenderMatcherConfig
        from crossfire_ns.localize.render import MapRenderer
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        config = CrossfireRenderMatcherConfig(descriptor_source=self.source, min_similarity=self.min_similarity)
        renderer = MapRenderer(crossfire_map.model, descriptors=config.renders_descriptors)
        matcher = config.setup(model=crossfire_map.model, renderer=renderer)
        queries, _ = load_query_set(self.query_dir)
        table = Table(title=f"Descriptor matches at the true pose: {self.query_dir}")
        for col in ("view", "matches", "within 2 px", "within 5 px", "median error px"):
            table.add_column(col)
        totals = {"matches": 0, "within_2px": 0, "within_5px": 0}
        per_view = []
        for query in queries:
            image = undistort_if_needed(read_query_image(query), query.K, query.dist_coeffs, fisheye=query.fisheye)
            K = query.K
            height, width = image.shape[:2]
            if self.max_width and width > self.max_width:
                new_w, new_h = self.max_width, round(height * self.max_width / width)
                K = scale_intrinsics(K, new_w / width, new_h / height)
                image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
                height, width = new_h, new_w
            c2w = crossfire_map.to_normalized(query.c2w_gt)
            view = renderer.render(c2w, K, width, height)
            prepared = matcher.prepare_query(image)
            if self.guided_radius_px > 0:
                matches = matcher.match_near(prepared, view, self.guided_radius_px)
            else:
                matches = matcher.match(prepared, view)
            errors = projection_errors(matches.points3d, matches.points2d, K, c2w)
            row = {
                "view": query.file_path,
                "matches": len(errors),
                "within_2px": int((errors <= 2).sum()),
                "within_5px": int((errors <= 5).sum()),
                "median_error_px": float(np.median(errors)) if len(errors) else float("nan"),
            }
            per_view.append(row)
            for key in totals:
                totals[key] += row[key]
            n = max(row["matches"], 1)
            table.add_row(
                Path(row["view"]).name,
                str(row["matches"]),
                f"{row['within_2px'] / n:.1%}",
                f"{row['within_5px'] / n:.1%}",
                f"{row['median_error_px']:.2f}",
            )
        n = max(totals["matches"], 1)
        table.add_row(
            "all",
            f"{totals['matches'] / max(len(queries), 1):.0f} / view",
            f"{totals['within_2px'] / n:.1%}",
            f"{totals['within_5px'] / n:.1%}",
            "",
        )
        CONSOLE.print(table)
        return {"per_view": per_view, "share_2px": totals["within_2px"] / n, "share_5px": totals["within_5px"] / n}


if __name__ == "__main__":
    tyro.cli(DescriptorQuality).main()
