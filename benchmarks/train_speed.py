"""Training speed of crossfire-lite against nerfacto of the same size, measured in one process.

    python -m benchmarks.train_speed --data demo_output/scene

Both trainers use the same reduced field, the same 512-ray in-process data manager and the same scene;
crossfire's descriptor loss is on from step 0 so the figure includes the CNN and the descriptor field.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import tyro
from rich.console import Console
from rich.table import Table

CONSOLE = Console()


def _lite_trainer(data: Path, out: Path):
    from method_configs.crossfire_methods import crossfire_lite

    config = copy.deepcopy(crossfire_lite.config)
    # every crossfire loss at full size from the first step: no warm-up, and every ray's surface point is
    # remembered (not only opaque ones), so the distillation term has its points from the first steps
    config.pipeline.model.descriptor_loss_start_step = 0
    config.pipeline.model.distill_min_accumulation = 0.0
    return _common(config, data, out)


def _nerfacto_same_size(data: Path, out: Path):
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.models.nerfacto import NerfactoModelConfig

    from method_configs.crossfire_methods import crossfire_lite

    config = copy.deepcopy(method_configs["nerfacto"])
    lite = crossfire_lite.config.pipeline.model
    shared = {f: getattr(lite, f) for f in NerfactoModelConfig.__dataclass_fields__ if f != "_target"}
    config.pipeline.model = NerfactoModelConfig(**copy.deepcopy(shared))
    config.pipeline.datamanager = VanillaDataManagerConfig(
        dataparser=copy.deepcopy(crossfire_lite.config.pipeline.datamanager.dataparser),
        train_num_rays_per_batch=crossfire_lite.config.pipeline.datamanager.train_num_rays_per_batch,
    )
    return _common(config, data, out)


def _common(config, data: Path, out: Path):
    config.data = data
    config.pipeline.datamanager.data = data
    config.output_dir = out
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.mixed_precision = False
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
    config.steps_per_save = 10**9
    config.set_timestamp()
    return config


def time_trainer(config, warmup: int, iterations: int) -> float:
    """Mean wall seconds per ``train_iteration`` after ``warmup`` untimed steps.

    The training callbacks run before and after each step as in ``Trainer.train`` (they advance the model's step
    and nerfacto's proposal annealing); saving, evaluation and logging do not."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    from crossfire_ns.compat import offline_lpips

    with offline_lpips():
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
    trainer.pipeline.train()

    def iteration(step: int) -> None:
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        trainer.train_iteration(step)
        for callback in trainer.callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)

    for step in range(warmup):
        iteration(step)
    start = time.perf_counter()
    for step in range(warmup, warmup + iterations):
        iteration(step)
    return (time.perf_counter() - start) / iterations


@dataclass
class TrainSpeed:
    data: Path
    """Scene to train on (e.g. demo_output/scene)."""
    output_dir: Path = Path("/tmp/crossfire_train_speed")
    """Scratch folder for the two runs."""
    warmup: int = 10
    """Iterations not timed."""
    iterations: int = 100
    """Timed iterations per method."""

    def main(self) -> None:
        import torch

        lite = time_trainer(_lite_trainer(self.data, self.output_dir), self.warmup, self.iterations)
        base = time_trainer(_nerfacto_same_size(self.data, self.output_dir), self.warmup, self.iterations)
        table = Table(title=f"Training speed on {self.data} ({torch.get_num_threads()} threads, CPU)")
        for col in ("method", "s / iteration", "iterations / s"):
            table.add_column(col)
        table.add_row("nerfacto (same size)", f"{base:.3f}", f"{1 / base:.2f}")
        table.add_row("crossfire-lite", f"{lite:.3f}", f"{1 / lite:.2f}")
        CONSOLE.print(table)
        CONSOLE.print(f"crossfire-lite / nerfacto time per iteration: {lite / base:.2f}x")


if __name__ == "__main__":
    tyro.cli(TrainSpeed).main()
