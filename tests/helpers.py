"""Test helpers: train a tiny crossfire-lite map in-process and read back its logged scalars."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Tuple


def train_lite(scene: Path, out_dir: Path, iterations: int, loss_start: int) -> Tuple[Path, Dict[str, List]]:
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
    config.pipeline.model.eval_num_rays_per_chunk = 1 << 12
    config.set_timestamp()
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    base = config.get_base_dir()
    events = sorted(base.glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[-1]))
    accumulator.Reload()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return base / "config.yml", scalars
