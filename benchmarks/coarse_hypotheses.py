"""How good the index path's coarse hypotheses are: every retrieved view's PnP pose (early exit off), its inliers and
matches, and how far it is from the query's final pose where that final pose is right against ground truth.

The coarse stage's early exit and hypothesis trials decide on inlier counts; this says whether inlier counts can tell
a hypothesis the refinement can rescue (within a few degrees) from one it cannot. It hooks the matcher's PnP calls at
the coarse threshold (``reprojection_threshold_px``), in the order the views are tried.

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
        from crossfire_ns.geometry import c2w_pose_errors, opencv_w2c_to_opengl_c2w, rotation_angle_deg
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        config = replace(self.matcher, early_exit_inliers=10**9).without_floors()
        localizer = MapLocalizer(crossfire_map, config)
        localizer.warm_up()
        matcher = localizer.localizer.matcher
        hypotheses, finals = [], []
        pnp, estimate = matcher._pnp, matcher._estimate_from_index

        def recorded_pnp(points3d, points2d, K, threshold, shape):
            result = pnp(points3d, points2d, K, threshold, shape)
            if threshold == config.reprojection_threshold_px:  # the coarse stage's threshold
                hypotheses.append((result, len(points3d)))
            return result

        def recorded_estimate(*args, **kwargs):
            finals.append(estimate(*args, **kwargs))
            return finals[-1]

        matcher._pnp, matcher._estimate_from_index = recorded_pnp, recorded_estimate
        rows = []
        for query_dir in self.query_dirs:
            for q in load_query_set(query_dir)[0]:
                hypotheses.clear()
                finals.clear()
                answer = localizer.localize(read_query_image(q), K=q.K)
                r_gt = c2w_pose_errors(answer.c2w, q.c2w_gt)[1] if answer.localized else np.inf
                final = finals[-1] if finals and finals[-1].success and r_gt <= self.right_deg else None
                for rank, (result, matches) in enumerate(hypotheses):
                    error = np.nan
                    if result.success and final is not None:
                        c2w = opencv_w2c_to_opengl_c2w(result.R, result.t)  # normalised frame, as the final pose
                        error = rotation_angle_deg(c2w[:3, :3].T @ final.c2w[:3, :3])
                    rows.append(
                        {
                            "folder": query_dir.name, "file_path": q.file_path, "rank": rank,
                            "success": result.success, "inliers": result.num_inliers, "matches": matches,
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
