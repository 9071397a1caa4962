"""Tracking a moving camera: ``ns-localize --prior sequential`` and the server's ``sequence`` mode over a walk.

    crossfire-make-scene --output-dir SCENE --walk.frames 150 [--walk.blur-steps 5]   # SCENE/walk/
    python -m benchmarks.tracking --load-config RUN/config.yml --walk-dir SCENE/walk --output-dir OUT

For each mode: frames per second (1 / median seconds per frame, and over the whole run), accuracy against the
walk's ground truth (median errors, recall at 1%/1 deg, 2%/2 deg, 5%/5 deg of the scene), lost frames and whether
the next frame was found again (recovery: retrieval, then tracking again), and ``evo_ape`` (translation part, no
alignment: both trajectories are in the training data's frame) on the TUM exports, so that the figures do not rest
only on our own metrics.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import numpy as np
import tyro
from PIL import Image
from rich.console import Console

from benchmarks.server_process import running_server
from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.io.atomic import write_json_atomic
from crossfire_ns.io.pose_formats import write_tum_trajectory
from crossfire_ns.localize.folder import localize_folder, read_inputs
from crossfire_ns.map import load_map
from crossfire_ns.results import QueryResult

CONSOLE = Console()


def evo_ape(reference: Path, estimate: Path) -> Dict[str, float]:
    """``evo_ape tum reference estimate`` (translation part, not aligned): its statistics (max, mean, median, ...)."""
    command = shutil.which("evo_ape") or str(Path(sys.executable).parent / "evo_ape")
    if not Path(command).exists():
        return {"error": "evo is not installed (pip install evo; it is in the bench extra)"}
    out = subprocess.run(
        [command, "tum", str(reference), str(estimate), "--no_warnings"], capture_output=True, text=True
    )
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[-500:]}
    stats = {}
    for line in out.stdout.splitlines():
        match = re.match(r"^\s*(max|mean|median|min|rmse|sse|std)\s+([-+0-9.eE]+)\s*$", line)
        if match:
            stats[match.group(1)] = float(match.group(2))
    return stats


def recovery(results: List[QueryResult]) -> Dict[str, int]:
    """Lost frames (not localized) and how many of the losses were followed by a localized frame."""
    lost = [i for i, r in enumerate(results) if r.status != "localized"]
    found_again = sum(1 for i in lost if i + 1 < len(results) and results[i + 1].status == "localized")
    ends_lost = bool(lost) and lost[-1] == len(results) - 1
    return {"lost": len(lost), "found_again_next_frame": found_again, "lost_at_the_end": int(ends_lost)}


@dataclass
class Tracking:
    load_config: Path
    """config.yml of a trained crossfire map of the scene the walk is in."""
    walk_dir: Path
    """A walk (crossfire-make-scene --walk.frames N writes SCENE/walk/)."""
    output_dir: Path
    """Outputs: sequential/ (ns-localize's), server/ (answers), TUM files, tracking.json."""
    max_frames: Optional[int] = None
    """Only the first N frames."""
    server: bool = True
    """Also the server's sequence mode over the same frames."""
    scene_extent: Optional[float] = None
    """Scene size for the recall thresholds (default: the training cameras')."""
    sequential: bool = True
    """Run ns-localize --prior sequential (off: the server only)."""
    cover_every: int = 0
    """> 0: the server is sent a flat grey frame (a covered lens) instead of every Nth frame, to measure recovery;
    those frames count as lost."""

    def main(self) -> Dict:
        out = Path(self.output_dir)
        inputs = read_inputs(self.walk_dir, prior="sequential", max_queries=self.max_frames)
        queries = inputs.queries
        gt = out / "ground_truth_tum.txt"
        truth = [QueryResult(q.file_path, "localized", q.c2w_gt) for q in queries]
        write_tum_trajectory(gt, truth, timestamps=range(len(queries)))
        report: Dict[str, Dict] = {}

        extent = self.scene_extent
        if self.sequential:
            crossfire_map = load_map(self.load_config)
            extent = extent or crossfire_map.camera_extent()
            start = time.perf_counter()
            summary = localize_folder(
                crossfire_map, inputs, out / "sequential", prior="sequential", scene_extent=extent, overwrite=True
            )
            wall = time.perf_counter() - start
            with (out / "sequential" / "results.csv").open(newline="") as handle:
                results = [QueryResult.from_csv_row(row) for row in csv.DictReader(handle)]
            report["ns-localize --prior sequential"] = self._figures(
                summary, results, wall, gt, out / "sequential" / "trajectory_tum.txt"
            )
            del crossfire_map

        if self.server:
            name = "server sequence mode" + (f", every {self.cover_every}th frame covered" if self.cover_every else "")
            report[name] = self._server(queries, out / "server", gt, extent or 1.0)
        write_json_atomic(out / "tracking.json", report)
        CONSOLE.print_json(json.dumps(report))
        return report

    def _figures(self, summary, results, wall, gt, estimate) -> Dict:
        return {
            "frames": len(results),
            "fps_median": 1.0 / summary["median_seconds"] if summary.get("median_seconds") else None,
            "fps_overall": len(results) / wall,
            "median_translation_error": summary["median_translation_error"],
            "median_rotation_error_deg": summary["median_rotation_error_deg"],
            "recall": {f"{r['translation']:.3g}/{r['rotation_deg']:g}deg": r["recall"] for r in summary["recall"]},
            "localized": summary["num_localized"],
            **recovery(results),
            "evo_ape_translation": evo_ape(gt, estimate),
        }

    def _server(self, queries, out: Path, gt: Path, extent: float) -> Dict:
        from crossfire_ns.localize.folder import evaluate

        out.mkdir(parents=True, exist_ok=True)
        results: List[QueryResult] = []
        sources: List[str] = []
        with running_server(self.load_config) as (_, url):
            start = time.perf_counter()
            with httpx.Client(timeout=600) as session:
                for index, query in enumerate(queries):
                    K = query.K
                    covered = self.cover_every > 0 and (index + 1) % self.cover_every == 0
                    image = query.path.read_bytes()
                    if covered:
                        grey = io.BytesIO()
                        Image.fromarray(np.full((query.height, query.width, 3), 128, np.uint8)).save(grey, format="PNG")
                        image = grey.getvalue()
                    form = {"fx": K[0, 0], "fy": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "sequence": "walk"}
                    sent = time.perf_counter()
                    answer = session.post(
                        f"{url}/localize",
                        files={"image": (query.path.name, image)},
                        data={k: str(v) for k, v in form.items()},
                    ).json()
                    result = QueryResult(query.file_path, answer.get("status", "failed"), has_gt=True)
                    result.seconds = time.perf_counter() - sent
                    sources.append(("covered, " if covered else "") + answer.get("prior_source", ""))
                    result.message = answer.get("message", "")
                    if result.status == "localized":
                        result.c2w = np.asarray(answer["transform_matrix"])
                        result.num_inliers = answer["num_inliers"]
                        result.t_err, result.r_err = c2w_pose_errors(result.c2w, query.c2w_gt)
                    results.append(result)
            wall = time.perf_counter() - start
        estimate = out / "trajectory_tum.txt"
        write_tum_trajectory(estimate, results, timestamps=range(len(results)))
        write_json_atomic(out / "answers.json", [r.to_dict() for r in results])
        summary, _ = evaluate(results, extent)
        figures = self._figures(summary, results, wall, gt, estimate)
        figures["prior_sources"] = {s: sources.count(s) for s in sorted(set(sources))}
        return figures


if __name__ == "__main__":
    tyro.cli(Tracking).main()
