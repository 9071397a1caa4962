"""Test helpers: a tiny crossfire-lite map trained in-process, sample localization results, folder listings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Tuple


def train_lite(
    scene: Path, out_dir: Path, iterations: int, loss_start: int, **model_overrides
) -> Tuple[Path, Dict[str, List]]:
    """Train crossfire-lite on ``scene`` in-process (``model_overrides``: CrossfireModelConfig fields); returns its
    config.yml and the logged scalars (tag -> [(step, value)])."""
    from nerfstudio.scripts.train import train_loop
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from method_configs.crossfire_methods import crossfire_lite

    config = copy.deepcopy(crossfire_lite.config)
    config.data = scene
    config.pipeline.datamanager.data = scene
    config.output_dir = out_dir
    config.experiment_name = "test"
    config.timestamp = "run"
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.max_num_iterations = iterations
    config.steps_per_save = iterations
    config.steps_per_eval_batch = 10**9
    config.steps_per_eval_image = 10**9
    config.steps_per_eval_all_images = 10**9
    config.logging.steps_per_log = 5
    config.logging.local_writer.enable = False
    config.pipeline.model.descriptor_loss_start_step = loss_start
    # crossfire-lite trains its field by distillation alone; the test map keeps the rendered-descriptor loss on
    # too (the GPU configs' default), so that both paths are trained and checked end to end
    config.pipeline.model.descriptor_loss_mult = 1.0
    config.pipeline.model.eval_num_rays_per_chunk = 1 << 12
    for name, value in model_overrides.items():
        setattr(config.pipeline.model, name, value)
    config.set_timestamp()
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    base = config.get_base_dir()
    events = sorted(base.glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[-1]))
    accumulator.Reload()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return base / "config.yml", scalars


def pose(x: float):
    """A 4x4 camera-to-world at (x, 2, -1), axis-aligned."""
    import numpy as np

    c2w = np.eye(4)
    c2w[:3, 3] = [x, 2.0, -1.0]
    return c2w


def sample_covariance():
    """A 6x6 pose covariance (symmetric, positive definite, with correlations), as a localized result carries."""
    import numpy as np

    factor = np.random.default_rng(7).normal(0.0, 1.0, (6, 6))
    return factor @ factor.T * 1e-4 + np.diag([1e-6] * 3 + [1e-4] * 3)


def sample_results():
    """One localized, one failed and one unreadable query, all with ground truth."""
    from crossfire_ns.results import QueryResult

    localized = QueryResult("images/a.png", "localized", pose(1.0), 120, 300, 0.8, 1.5, "localized", 0.02, 0.4, True)
    localized.covariance = sample_covariance()
    return [
        localized,
        QueryResult(
            "images/b.png", "failed", None, 3, 40, None, 2.5, "only 3 inliers, need at least 12", None, None, True
        ),
        QueryResult("images/c.png", "unreadable", message="cannot be read", has_gt=True),
    ]


def leftovers(folder: Path) -> list:
    """Names in a folder, sorted (temporary files of atomic writes would show here)."""
    return sorted(p.name for p in Path(folder).iterdir())


def tiny_map_matcher():
    """The crossfire matcher for the 100-iteration test map: no confidence floor. That map is far too
    rough for the calibrated floor (it would report every query as failed), and its training views do not match one
    another well enough to triangulate its index cells (they are lifted with rendered depth), and its rough poses would
    send queries through the novel-view check's renders at random, so that is off; the tests using it check plumbing
    (inputs, outputs, resumption, the server), not accuracy."""
    from crossfire_ns.localize.map_index import MapIndexConfig
    from crossfire_ns.localize.matchers import CrossfireMatcherConfig
    from crossfire_ns.localize.matchers.crossfire import RenderRoundsConfig

    return CrossfireMatcherConfig(
        index=MapIndexConfig(triangulate=False), render=RenderRoundsConfig(novel_view_deg=float("inf"))
    ).without_floors()
