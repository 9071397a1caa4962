"""Retrieval quality: how far from each held-out view is the training view that retrieval ranks first?

    python -m benchmarks.retrieval_quality --load-config RUN/config.yml --query-dir DIR

For every query with a ground-truth pose, each retrieval score (``matches``, ``gem``) ranks the map's training
views; the table gives the median rotation angle between the query and its top-1 view, next to the best any
retrieval could do (the closest training view), and the true-closeness rank of each top-1 view (0 = the closest).
Then, for the default score, the rank in the retrieval order of the first view that sees what the query sees (at the
true pose, the refinement's covisibility rule: at least ``covisible_share`` as many of the query's index cells as the
view that sees most): the coarse stage can only start from a view within the ``top_k`` (then ``retry_top_k``) it tries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import tyro
from rich.console import Console
from rich.table import Table

CONSOLE = Console()


@dataclass
class RetrievalQuality:
    load_config: Path
    """config.yml of the trained crossfire map."""
    query_dir: Path
    """Held-out views with ground truth (transforms.json with transform_matrix per frame)."""
    scores: List[str] = field(default_factory=lambda: ["matches", "gem"])
    """Retrieval scores to compare (see ns-localize --retrieval)."""

    def main(self) -> dict:
        from crossfire_ns.geometry import c2w_pose_errors
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.priors import retrieval_index
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        c2ws = crossfire_map.train_c2w
        queries = [q for q in load_query_set(self.query_dir)[0] if q.c2w_gt is not None]
        table = Table(title=f"Top-1 retrieval: {self.query_dir} ({len(queries)} queries)")
        for column in ("score", "median top-1 rotation error", "best possible", "true-closeness rank of top-1"):
            table.add_column(column)
        report = {}
        for score in self.scores:
            index = retrieval_index(crossfire_map, score)
            top1, best, ranks = [], [], []
            for query in queries:
                truth = crossfire_map.to_normalized(query.c2w_gt)
                angles = np.array([c2w_pose_errors(c2w, truth)[1] for c2w in c2ws])
                chosen = int(index.scores(read_query_image(query)).argmax())
                top1.append(angles[chosen])
                best.append(angles.min())
                ranks.append(int((angles < angles[chosen]).sum()))
            report[score] = {
                "median_top1_deg": float(np.median(top1)),
                "median_best_deg": float(np.median(best)),
                "ranks": ranks,
            }
            table.add_row(score, f"{np.median(top1):.1f} deg", f"{np.median(best):.1f} deg", str(ranks))
        CONSOLE.print(table)
        report["covisible_rank"] = self.covisible_ranks(crossfire_map, queries)
        return report

    def covisible_ranks(self, crossfire_map, queries) -> dict:
        """Per query, the retrieval rank (0 = first) of the first training view that sees what the query sees, and the
        share of queries for which it is within the coarse stage's first and second pass."""
        from crossfire_ns.io.queries import read_query_image
        from crossfire_ns.localize.map_index import map_index
        from crossfire_ns.localize.matchers import CrossfireMatcherConfig
        from crossfire_ns.localize.priors import retrieval_index

        config = CrossfireMatcherConfig()
        index = map_index(crossfire_map, config.index, config.patch)
        retrieval = retrieval_index(crossfire_map, self.scores[0])
        ranks = []
        for query in queries:
            image = read_query_image(query)
            truth = crossfire_map.to_normalized(query.c2w_gt)
            size = (image.shape[1], image.shape[0])
            angle, share = config.refine.covisible_angle_deg, config.refine.covisible_share
            seeing = set(index.covisible_views(truth, query.K, size, len(index), angle, share))
            order = np.argsort(-retrieval.scores(image).cpu().numpy(), kind="stable")
            ranks.append(next((rank for rank, view in enumerate(order) if int(view) in seeing), len(order)))
        ranks_array = np.array(ranks)
        first, second = config.retrieval.top_k, config.retrieval.retry_top_k
        out = {
            "ranks": ranks,
            "within_first_pass": float(np.mean(ranks_array < first)) if ranks else float("nan"),
            "within_second_pass": float(np.mean(ranks_array < second)) if ranks else float("nan"),
        }
        CONSOLE.print(
            f"first retrieved view that sees what the query sees: ranks {ranks}; within the first {first}: "
            f"{out['within_first_pass']:.0%}, within {second}: {out['within_second_pass']:.0%}"
        )
        return out


if __name__ == "__main__":
    tyro.cli(RetrievalQuality).main()
