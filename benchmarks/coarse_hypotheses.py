"""How good the index path's coarse hypotheses are: every retrieved view's PnP pose (early exit off), its inliers and
matches, and how far it is from the query's final pose where that final pose is right against ground truth.

The coarse stage's early exit and hypothesis trials decide on inlier counts; this says whether inlier counts can tell
a hypothesis the refinement can rescue (within a few degrees) from one it cannot. It runs the coarse stage
(``coarse.coarse_hypotheses``, early exit off) on the first-pass retrieved views of each query, as ns-localize prepares
the query, beside ns-localize's own answer.

    python -m benchmarks.coarse_hypotheses --load-config MAP/config.yml --query-dirs Q1 Q2 --output O.csv
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List

import numpy as np
import tyro
from rich.console import Console

from crossfire_ns.io.atomic import write_csv_atomic
from crossfire_ns.localize.matchers.crossfire import CrossfireMatcherConfig

CONSOLE = Console(width=140)


@dataclass
class CoarseHypotheses:
    """Write one row per coarse hypothesis of every query; print their error percentiles."""

    load_config: Path
    """config.yml of the map."""
    query_dirs: List[Path]
    """Query folders with transforms.json (ground truth)."""
    output: Path
    """CSV to write."""
    right_deg: float = 2.0
    """A query's final pose is a reference when it is within this many degrees of the ground truth."""
    matcher: CrossfireMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """The localizer's settings; the early exit and the floors are switched off here."""

    def main(self) -> List[dict]:
        from crossfire_ns.geometry import c2w_pose_errors, rotation_angle_deg
        from crossfire_ns.io.queries import downscale_to, load_query_set, read_query_image, undistort_if_needed
        from crossfire_ns.localize.api import MapLocalizer
        from crossfire_ns.localize.coarse import coarse_hypotheses, retrieved_views
        from crossfire_ns.localize.priors import retrieval_index
        from crossfire_ns.localize.refine import hypothesis_c2w
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        config = self.matcher.without_floors()
        localizer = MapLocalizer(crossfire_map, config)
        localizer.warm_up()
        matcher = localizer.localizer.matcher
        every_view = replace(config.coarse, early_exit_inliers=10**9)
        rows = []
        for query_dir in self.query_dirs:
            for q in load_query_set(query_dir)[0]:
                image = read_query_image(q)
                answer = localizer.localize(image, K=q.K, dist_coeffs=q.dist_coeffs, fisheye=q.fisheye)
                r_gt = c2w_pose_errors(answer.c2w, q.c2w_gt)[1] if answer.localized else np.inf
                final = crossfire_map.to_normalized(answer.c2w) if answer.localized and r_gt <= self.right_deg else None
                rgb = undistort_if_needed(image, q.K, q.dist_coeffs, fisheye=q.fisheye)
                rgb, K = downscale_to(rgb, q.K, localizer.max_side_for(rgb.shape[1], rgb.shape[0], q.K))
                query = matcher.encode(rgb)
                index = matcher.index_on(query.device)
                priors = retrieval_index(crossfire_map).query(rgb, config.num_priors)
                views = retrieved_views(index, priors, config.retrieval).first
                coarse = coarse_hypotheses(index, query, K, views, every_view, matcher.solve, config.min_similarity)
                by_view = {h.view: h for h in coarse.hypotheses}
                for rank, (view, inliers) in enumerate(zip(coarse.tried, coarse.inlier_counts)):
                    hypothesis = by_view.get(view)
                    error = np.nan
                    if hypothesis is not None and final is not None:
                        error = rotation_angle_deg(hypothesis_c2w(hypothesis)[:3, :3].T @ final[:3, :3])
                    rows.append(
                        {
                            "folder": query_dir.name, "file_path": q.file_path, "rank": rank,
                            "success": hypothesis is not None, "inliers": inliers,
                            "matches": hypothesis.num_matches if hypothesis is not None else np.nan,
                            "final_r_gt": r_gt, "hypothesis_off_deg": error,
                        }
                    )  # fmt: skip
        write_csv_atomic(self.output, rows, fieldnames=list(rows[0]) if rows else ["folder"])
        off = np.array([r["hypothesis_off_deg"] for r in rows if np.isfinite(r["hypothesis_off_deg"])])
        first = np.array(
            [r["hypothesis_off_deg"] for r in rows if r["rank"] == 0 and np.isfinite(r["hypothesis_off_deg"])]
        )
        if len(off) and len(first):
            CONSOLE.print(
                f"{len(off)} hypotheses of right queries: off by {np.percentile(off, [10, 50, 90]).round(2)} deg "
                f"(10/50/90%), {int((off < 5).sum())} within 5 deg; the first view's: {np.percentile(first, [10, 50, 90]).round(2)}"
            )
        return rows


def entrypoint() -> None:
    tyro.cli(CoarseHypotheses).main()


if __name__ == "__main__":
    entrypoint()
