"""Error budget of the index path on a generated scene whose geometry is exact (``crossfire-make-scene --write-depth``).

Three questions, each against the truth:

1. **Depth**: how far the map's rendered distance (median and expected) is from the true distance at the cells of
   the training views, for every cell the radiance field covers, after the texture and depth-edge filters, and for
   the cells the neighbour-view check trusts; near true depth edges and away from them; and, for the cells that
   triangulate from their matches in neighbouring training images (what the index keeps by default), the
   triangulated distance against the rendered one at the same cells (absolute and signed: a bias moves the pose).
2. **Matches**: the reprojection residuals, under the true query pose, of the query's index matches (the coarse
   stage's mutual nearest neighbours), and of the refinement's guided matches searched around the true pose (their
   median size and each query's mean offset: a consistent 2D bias of the features moves the pose, noise does not).
3. **Solver**: the pose error when the index path starts from the true pose as its prior (its coarse stage still
   matches globally, so this includes the coarse stage), and when its refinement rounds alone start at the true pose
   (what depth and the guided matches cost, without the coarse stage).

    python -m benchmarks.error_budget --load-config RUN/config.yml --scene SCENE_DIR

Writes nothing but the printed tables (and ``--output-json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.table import Table

from crossfire_ns.geometry import project_c2w
from crossfire_ns.io.atomic import write_json_atomic
from crossfire_ns.localize.map_index import (
    MapIndex,
    MapIndexConfig,
    confirmed_by_neighbours,
    depth_edges,
    describe_view,
    triangulated_distances,
)
from crossfire_ns.localize.matchers import CrossfireMatcherConfig
from crossfire_ns.localize.matching import guided_matches
from crossfire_ns.localize.pnp import PoseSolver
from crossfire_ns.localize.query_features import QueryFeatures
from crossfire_ns.localize.refine import projected_cells, refinement_round, refinement_views, stacked_cells
from crossfire_ns.localize.render import MapRenderer

CONSOLE = Console(width=120)


@dataclass
class ErrorBudget:
    """Measure depth, match and solver error of the index path against a generated scene's exact geometry."""

    load_config: Path
    """config.yml of a map trained on the scene."""
    scene: Path
    """The generated scene (transforms.json, scene.json with depth/, queries/)."""
    query_dir: Optional[Path] = None
    """Queries with ground truth (default: the scene's queries/)."""
    views: int = 12
    """Training views whose depth is checked (evenly spread; each costs one render at cell resolution)."""
    output_json: Optional[Path] = None
    """Also write the figures here."""

    def main(self) -> Dict:
        from crossfire_ns.map import load_map

        crossfire_map = load_map(self.load_config)
        scene = json.loads((self.scene / "scene.json").read_text())
        if "depth" not in scene:
            raise SystemExit(f"{self.scene}/scene.json lists no depth: generate it with --write-depth")
        figures = {"depth": self.depth_budget(crossfire_map, scene)}
        figures["matches"] = self.match_budget(crossfire_map)
        if self.output_json:
            write_json_atomic(self.output_json, figures)
        return figures

    def _true_distance(self, crossfire_map, index: int, raw) -> np.ndarray:
        """(h, w) true distance from the camera centre of each cell's ray (normalised units), from the z-depth."""
        name = Path(crossfire_map.train_dataset._dataparser_outputs.image_filenames[index]).stem
        z = np.load(self.scene / "depth" / f"{name}.npy").astype(np.float64)
        cell = int(raw.cell)
        h, w = raw.distance.shape
        z = z[: h * cell, : w * cell].reshape(h, cell, w, cell).mean(axis=(1, 3))
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        K = raw.K
        ray = np.sqrt(((xs - K[0, 2]) / K[0, 0]) ** 2 + ((ys - K[1, 2]) / K[1, 1]) ** 2 + 1.0)
        return z * ray * crossfire_map.scale

    def _true_points(self, crossfire_map, index, view: int) -> np.ndarray:
        """(M, 3) the index cells of ``view`` lifted with the true depth (normalised frame)."""
        name = Path(crossfire_map.train_dataset._dataparser_outputs.image_filenames[view]).stem
        z = np.load(self.scene / "depth" / f"{name}.npy").astype(np.float64)
        cell = int(index.cell_px[view])
        pixels = index.views[view].pixels.numpy().astype(np.float64)
        x0 = np.floor(pixels[:, 0] - cell / 2).astype(int)
        y0 = np.floor(pixels[:, 1] - cell / 2).astype(int)
        zs = np.mean([z[y0 + dy, x0 + dx] for dy in range(cell) for dx in range(cell)], axis=0)
        K = index.Ks[view]
        c2w = index.c2ws[view]
        cam = np.stack([(pixels[:, 0] - K[0, 2]) / K[0, 0], -(pixels[:, 1] - K[1, 2]) / K[1, 1], -np.ones(len(zs))], 1)
        return c2w[:3, 3] + (cam * zs[:, None] * crossfire_map.scale) @ c2w[:3, :3].T

    def depth_budget(self, crossfire_map, scene) -> Dict:
        renderer = MapRenderer(crossfire_map.model)
        num = len(crossfire_map.train_dataset)
        chosen = sorted({int(round(i)) for i in np.linspace(0, num - 1, min(self.views, num))})
        out: Dict[str, Dict] = {}
        for estimator in ("median", "expected"):
            config = MapIndexConfig(depth=estimator)
            raw = [describe_view(crossfire_map, renderer, i, config) for i in range(num)]
            c2ws = np.asarray(crossfire_map.train_c2w, dtype=np.float64)
            confirmed = confirmed_by_neighbours(raw, c2ws, config)
            triangulated = triangulated_distances(raw, c2ws, config)
            groups: Dict[str, List[np.ndarray]] = {
                "covered": [],
                "filtered": [],
                "trusted": [],
                "edges": [],
                "flat": [],
                "rendered at triangulated": [],
                "triangulated": [],
                "triangulated, signed": [],
                "rendered at triangulated, signed": [],
            }
            for i in chosen:
                truth = self._true_distance(crossfire_map, i, raw[i])
                error = np.abs(raw[i].distance - truth) / truth
                covered = np.isfinite(error)
                true_edge = depth_edges(truth, config.max_depth_step)
                groups["covered"].append(error[covered])
                groups["filtered"].append(error[raw[i].keep])
                groups["trusted"].append(error[raw[i].keep & confirmed[i]])
                groups["edges"].append(error[covered & true_edge])
                groups["flat"].append(error[covered & ~true_edge])
                lifted = np.isfinite(triangulated[i])
                groups["rendered at triangulated"].append(error[lifted])
                groups["rendered at triangulated, signed"].append(((raw[i].distance - truth) / truth)[lifted])
                signed = (triangulated[i] - truth) / truth
                groups["triangulated"].append(np.abs(signed[lifted]))
                groups["triangulated, signed"].append(signed[lifted])
            out[estimator] = {k: _stats(np.concatenate(v)) for k, v in groups.items()}
        table = Table(title=f"Rendered distance vs truth ({len(chosen)} training views), relative error")
        for col in ("depth", "cells", "count", "median", "p90", "share > 5%"):
            table.add_column(col)
        for estimator, rows in out.items():
            for name, s in rows.items():
                table.add_row(
                    estimator, name, str(s["count"]), f"{s['median']:.2%}", f"{s['p90']:.2%}", f"{s['over_5pct']:.1%}"
                )
        CONSOLE.print(table)
        return out

    def match_budget(self, crossfire_map) -> Dict:
        """Residuals of the query's index matches under the true pose, and the pose from the true pose as prior."""
        from crossfire_ns.geometry import c2w_pose_errors
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer
        from crossfire_ns.localize.matching import mutual_nearest_neighbours

        out = {}
        for estimator in ("median", "expected", "true"):
            depth = "median" if estimator == "true" else estimator
            # floors off: the budget measures how far the pose is, not whether the floors would report it
            matcher = CrossfireMatcherConfig(index=replace(MapIndexConfig(), depth=depth)).without_floors()
            localizer = MapLocalizer(crossfire_map, matcher)
            if estimator == "true":  # the same cells, lifted with the exact depth: what the map's depth costs
                crossfire_map.cache.clear()
                index = localizer.localizer.matcher.index()
                for v, cells in enumerate(index.views):
                    cells.points = torch.from_numpy(self._true_points(crossfire_map, index, v)).float()
            queries, _ = load_query_set(self.query_dir or self.scene / "queries")
            residuals, guided, biases, from_truth, from_retrieval, refined = [], [], [], [], [], []
            for q in queries:
                image = read_query_image(q)
                truth = crossfire_map.to_normalized(q.c2w_gt)
                m = localizer.localizer.matcher
                index = m.index()
                query = m.encode(image)
                view = index.nearest_views(truth, 1)[0]
                cells = index.views[view]
                pixels, _, front = project_c2w(cells.points.numpy().astype(np.float64), truth, q.K)
                descriptors, qpix = query.cells(int(index.cell_px[view]))
                iv, iq, _ = mutual_nearest_neighbours(cells.descriptors, descriptors, matcher.min_similarity)
                r = np.linalg.norm(pixels[iv.numpy()] - qpix[iq].numpy(), axis=1)
                residuals.append(r)
                offsets = guided_offsets(m.config, index, query, truth, q.K)
                if len(offsets):
                    guided.append(np.linalg.norm(offsets, axis=1))
                    biases.append(float(np.linalg.norm(offsets.mean(axis=0))))
                refined.append(refined_from_truth(crossfire_map, m.config, index, query, truth, q))
                a = localizer.localize(image, K=q.K, prior=q.c2w_gt)
                from_truth.append(c2w_pose_errors(a.c2w, q.c2w_gt) if a.localized else (np.inf, np.inf))
                b = localizer.localize(image, K=q.K)
                from_retrieval.append(c2w_pose_errors(b.c2w, q.c2w_gt) if b.localized else (np.inf, np.inf))
            r = np.concatenate(residuals)
            out[estimator] = {
                "match_residual_px": {"median": float(np.median(r)), "share_within_2px": float(np.mean(r <= 2)),
                                      "share_within_4px": float(np.mean(r <= 4)), "count": int(len(r))},
                "guided_residual_px": _residual_stats(guided, biases),
                "from_truth": _pose_stats(from_truth),
                "refined_from_truth": _pose_stats(refined),
                "from_retrieval": _pose_stats(from_retrieval),
            }  # fmt: skip
            CONSOLE.print(f"[bold]{estimator} depth[/]: {json.dumps(out[estimator])}")
        return out


def guided_offsets(
    config: CrossfireMatcherConfig, index: MapIndex, query: QueryFeatures, truth: np.ndarray, K: np.ndarray
) -> np.ndarray:
    """(N, 2) offsets (px) of the refinement's guided matches, searched within its last radius around where the true
    pose projects the cells of its views, from those projections."""
    radius = config.refine.radius_px[-1]
    views = refinement_views(index, truth, K, query.shape, config.refine)
    points, descriptors = stacked_cells(index.views, views)
    pixels, keep = projected_cells(points, truth, K, query.shape, margin=radius + 1)
    if len(keep) == 0:
        return np.zeros((0, 2))
    found, xy, _ = guided_matches(
        descriptors[torch.from_numpy(keep)], torch.from_numpy(pixels[keep]).float(), query.feature_map.cpu(),
        int(np.ceil(radius)), config.min_similarity,
    )  # fmt: skip
    return xy.numpy().astype(np.float64) - pixels[keep][found.numpy()]


def refined_from_truth(crossfire_map, config: CrossfireMatcherConfig, index: MapIndex, query: QueryFeatures, truth, q):
    """(translation, rotation deg) error after the refinement rounds alone, started at the true pose."""
    from crossfire_ns.geometry import c2w_pose_errors

    c2w, solve = truth, PoseSolver(config.pnp)
    for radius in config.refine.radius_px:
        result = refinement_round(index, query, q.K, c2w, radius, config.refine, solve, config.min_similarity)
        if not result.pnp.success:
            return (np.inf, np.inf)
        c2w = result.c2w
    return c2w_pose_errors(crossfire_map.to_original(c2w), q.c2w_gt)


def _residual_stats(residuals: List[np.ndarray], biases: List[float]) -> Dict:
    """Size of the guided matches' residuals over all queries, and the median over queries of their mean offset."""
    if not residuals:
        return {"median": float("nan"), "share_within_1px": float("nan"), "median_query_bias": float("nan"), "count": 0}
    r = np.concatenate(residuals)
    return {
        "median": float(np.median(r)),
        "share_within_1px": float(np.mean(r <= 1)),
        "median_query_bias": float(np.median(biases)),
        "count": int(len(r)),
    }


def _stats(error: np.ndarray) -> Dict:
    if len(error) == 0:
        return {"count": 0, "median": float("nan"), "p90": float("nan"), "over_5pct": float("nan")}
    return {
        "count": int(len(error)),
        "median": float(np.median(error)),
        "p90": float(np.percentile(error, 90)),
        "over_5pct": float(np.mean(error > 0.05)),
    }


def _pose_stats(errors) -> Dict:
    t = np.array([e[0] for e in errors])
    r = np.array([e[1] for e in errors])
    return {"median_t": float(np.median(t)), "median_r_deg": float(np.median(r)), "max_r_deg": float(np.max(r))}


def entrypoint() -> None:
    tyro.cli(ErrorBudget).main()


if __name__ == "__main__":
    entrypoint()
