"""MethodSpecifications: crossfire (GPU default), crossfire-lite (2 CPU cores, minutes), crossfire-big.

``ns-train`` imports this module for every command, so it only builds configs: no model code runs here.
It also allow-lists the numpy types in nerfacto checkpoints, so that ns-viewer, ns-eval and resuming load
them under torch >= 2.6, and spares every nerfstudio command ~8 s of start-up (``compat``).
"""

from __future__ import annotations

from typing import Tuple

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from crossfire_ns.compat import allow_nerfstudio_checkpoints, quick_external_method_placeholders
from crossfire_ns.datamanager import CrossfireDataManagerConfig, ImageGroupedPixelSamplerConfig
from crossfire_ns.encoder import FeatureEncoderConfig
from crossfire_ns.model import CrossfireModelConfig

allow_nerfstudio_checkpoints()
quick_external_method_placeholders()


def _adam(lr: float, lr_final: float, max_steps: int) -> dict:
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps),
    }


def crossfire_trainer(
    method_name: str,
    model: CrossfireModelConfig,
    max_num_iterations: int,
    num_rays_per_batch: int,
    images_per_batch: int,
    steps_per_save: int = 2000,
    chunk: int = 1 << 15,
    steps_per_eval_image: int = 500,
) -> TrainerConfig:
    """One TrainerConfig shape for every variant; only sizes differ."""
    decay_steps = max(max_num_iterations, 1000)
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=steps_per_eval_image,
        steps_per_save=steps_per_save,
        max_num_iterations=max_num_iterations,
        mixed_precision=True,
        pipeline=VanillaPipelineConfig(
            datamanager=CrossfireDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(),
                train_num_rays_per_batch=num_rays_per_batch,
                eval_num_rays_per_batch=num_rays_per_batch,
                pixel_sampler=ImageGroupedPixelSamplerConfig(images_per_batch=images_per_batch),
            ),
            model=model,
        ),
        optimizers={
            "proposal_networks": _adam(1e-2, 1e-4, 200000),
            "fields": _adam(1e-2, 1e-4, 200000),
            "camera_opt": _adam(1e-3, 1e-4, 5000),
            "descriptor_field": _adam(1e-2, 1e-4, decay_steps),
            "encoder": _adam(1e-3, 1e-4, decay_steps),
        },
        viewer=ViewerConfig(num_rays_per_chunk=chunk),
        vis="viewer",
    )


LITE_ITERATIONS = 1000
"""crossfire-lite's training length: the map `make demo` trains (chosen on the bundled scene)."""


def _lite_model() -> CrossfireModelConfig:
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig

    proposal_args: Tuple[dict, ...] = (
        {"hidden_dim": 16, "log2_hashmap_size": 15, "num_levels": 5, "max_res": 128, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 15, "num_levels": 5, "max_res": 256, "use_linear": False},
    )
    return CrossfireModelConfig(
        eval_num_rays_per_chunk=1 << 13,
        average_init_density=0.01,
        num_levels=8,
        log2_hashmap_size=15,
        max_res=1024,
        num_proposal_samples_per_ray=(64, 32),
        num_nerf_samples_per_ray=24,
        proposal_net_args_list=list(proposal_args),
        proposal_warmup=1000,
        proposal_weights_anneal_max_num_iters=500,
        implementation="torch",
        camera_optimizer=CameraOptimizerConfig(mode="off"),
        descriptor_dim=16,
        descriptor_num_levels=8,
        descriptor_log2_hashmap_size=15,
        descriptor_max_res=1024,
        num_descriptor_samples=4,
        descriptor_loss_start_step=300,
        encoder=FeatureEncoderConfig(output_stride=2),
        warp_images_per_batch=2,
        descriptor_loss_mult=0.0,  # the distillation term trains the field here: as good, and cheaper
    )


def _default_model() -> CrossfireModelConfig:
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig

    return CrossfireModelConfig(
        eval_num_rays_per_chunk=1 << 15,
        average_init_density=0.01,
        camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
    )


def _big_model() -> CrossfireModelConfig:
    model = _default_model()
    model.num_levels = 16
    model.max_res = 4096
    model.log2_hashmap_size = 21
    model.num_nerf_samples_per_ray = 64
    model.num_proposal_samples_per_ray = (512, 256)
    model.hidden_dim = 128
    model.descriptor_dim = 64
    model.descriptor_num_levels = 16
    model.descriptor_log2_hashmap_size = 19
    model.descriptor_max_res = 2048
    model.descriptor_hidden_dim = 128
    model.num_descriptor_samples = 12
    model.encoder.channels = (32, 64, 128, 128)
    return model


crossfire = MethodSpecification(
    config=crossfire_trainer("crossfire", _default_model(), 30000, 4096, images_per_batch=8),
    description="CROSSFIRE map: nerfacto + descriptor field + scene-specific CNN, for ns-localize (GPU).",
)

crossfire_lite = MethodSpecification(
    config=crossfire_trainer(
        "crossfire-lite",
        _lite_model(),
        LITE_ITERATIONS,
        512,
        images_per_batch=4,
        steps_per_save=500,
        chunk=1 << 13,
        # no eval image (a full render at training's sample counts);
        # the viewer shows the map live, and --steps-per-eval-image N brings the images back
        steps_per_eval_image=0,
    ),
    description="Small crossfire map that trains a toy scene on 2 CPU cores in minutes.",
)

crossfire_big = MethodSpecification(
    config=crossfire_trainer("crossfire-big", _big_model(), 100000, 8192, images_per_batch=8, steps_per_save=5000),
    description="Larger crossfire map (bigger hash grids, 64-dim descriptors, wider CNN) for large scenes on a GPU.",
)
