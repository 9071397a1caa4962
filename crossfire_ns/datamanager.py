"""Ray batches grouped by image, plus the images themselves for the CNN.

The metric-learning loss needs several rays from the same image (in-image negatives) and the image to
run the encoder on, so each step samples ``images_per_batch`` images and ``num_rays // images_per_batch``
random pixels in each, in image-major order (optionally inside one random window per image, ``max_window_pixels``).
Before any of that, the scene's box is chosen from the training views (``scene_bounds``): a scene seen from inside is
modelled without contraction, in a box that holds it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from jaxtyping import Int
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.pixel_samplers import PixelSampler, PixelSamplerConfig
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.data.utils.dataloaders import CacheDataloader, FixedIndicesEvalDataloader, RandIndicesEvalDataloader
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from crossfire_ns.geometry import as_4x4
from crossfire_ns.scene_bounds import SCENE_BOUNDS_KEY, SceneBounds, scene_bounds


def window_size(image_height: int, image_width: int, max_pixels: int) -> Tuple[int, int]:
    """(h, w) of the largest window of the image's aspect with at most ``max_pixels`` pixels (the whole image when
    it fits, or when ``max_pixels`` is 0)."""
    if max_pixels <= 0 or image_height * image_width <= max_pixels:
        return image_height, image_width
    scale = (max_pixels / (image_height * image_width)) ** 0.5
    return max(1, int(image_height * scale)), max(1, int(image_width * scale))


def random_windows(
    count: int,
    image_height: int,
    image_width: int,
    size: Tuple[int, int],
    generator: Optional[torch.Generator] = None,
) -> Int[Tensor, "G 4"]:
    """``count`` random windows of ``size`` (h, w) inside an image, as rows (y0, x0, h, w). A window that is the
    whole image draws no random number, so whole-image training is unchanged by the option."""
    h, w = size
    if (h, w) == (image_height, image_width):
        corners = torch.zeros(count, 2, dtype=torch.long)
    else:
        corners = torch.stack(
            [
                torch.randint(image_height - h + 1, (count,), generator=generator),
                torch.randint(image_width - w + 1, (count,), generator=generator),
            ],
            dim=-1,
        )
    return torch.cat([corners, torch.tensor([[h, w]]).expand(count, 2)], dim=-1)


def sample_grouped_pixels(
    num_images: int,
    image_height: int,
    image_width: int,
    images_per_batch: int,
    rays_per_image: int,
    mask: Optional[Tensor] = None,
    device: Union[torch.device, str] = "cpu",
    generator: Optional[torch.Generator] = None,
    patch_size: int = 0,
    patch_dilation: int = 1,
    patch_fraction: float = 0.0,
    windows: Optional[Int[Tensor, "G 4"]] = None,
) -> Int[Tensor, "N 3"]:
    """(image position, y, x) for ``images_per_batch`` distinct images x ``rays_per_image`` pixels each.

    Rows are image-major: rows ``[g * R, (g + 1) * R)`` all come from the g-th chosen image, inside its row
    (y0, x0, h, w) of ``windows`` when given (``random_windows``; not with a mask). A share ``patch_fraction`` of
    each image's rays comes in square patches (``patch_size`` pixels a side, one every ``patch_dilation`` pixels):
    neighbouring pixels are the hard negatives that make descriptors precise. The rest are uniform. With a mask
    (N, H, W, 1), pixels are drawn only where it is set (no patches).
    """
    if images_per_batch > num_images:
        images_per_batch = num_images
    if windows is not None and mask is not None:
        raise ValueError("pixel windows and masks do not combine: sample masked images whole (max_window_pixels 0)")
    chosen = torch.randperm(num_images, generator=generator)[:images_per_batch]
    if windows is None:
        windows = random_windows(images_per_batch, image_height, image_width, (image_height, image_width))
    window_height, window_width = (int(v) for v in windows[0, 2:])
    span = (patch_size - 1) * patch_dilation + 1
    use_patches = mask is None and patch_size > 1 and span <= min(window_height, window_width)
    num_patches = int(rays_per_image * patch_fraction) // (patch_size**2) if use_patches else 0
    offsets = (
        torch.stack(torch.meshgrid(torch.arange(patch_size), torch.arange(patch_size), indexing="ij"), dim=-1).reshape(
            -1, 2
        )
        * patch_dilation
    )
    rows = []
    for image, window in zip(chosen.tolist(), windows.tolist()):
        if mask is not None:
            valid = torch.nonzero(mask[image, ..., 0].cpu(), as_tuple=False)
            pick = torch.randint(len(valid), (rays_per_image,), generator=generator)
            yx = valid[pick]
        else:
            num_uniform = rays_per_image - num_patches * patch_size**2
            y = torch.randint(window_height, (num_uniform,), generator=generator)
            x = torch.randint(window_width, (num_uniform,), generator=generator)
            corner_y = torch.randint(max(window_height - span + 1, 1), (num_patches, 1), generator=generator)
            corner_x = torch.randint(max(window_width - span + 1, 1), (num_patches, 1), generator=generator)
            patch_yx = (torch.stack([corner_y, corner_x], dim=-1) + offsets[None]).reshape(-1, 2)
            yx = torch.cat([torch.stack([y, x], dim=-1), patch_yx]) + torch.tensor(window[:2])
        rows.append(torch.cat([torch.full((rays_per_image, 1), image, dtype=torch.long), yx], dim=-1))
    return torch.cat(rows).to(device)


@dataclass
class ImageGroupedPixelSamplerConfig(PixelSamplerConfig):
    """Pixel sampler that returns rays grouped by image."""

    _target: Type = field(default_factory=lambda: ImageGroupedPixelSampler)
    images_per_batch: int = 4
    """Distinct images per batch; rays are split evenly among them (in-image negatives for the loss)."""
    patch_size: int = 4
    """Side of the square pixel patches that part of each image's rays come in (0 or 1: no patches)."""
    patch_dilation: int = 2
    """Spacing of patch pixels; neighbours this far apart must get different descriptors."""
    patch_fraction: float = 0.5
    """Share of each image's rays sampled in patches (hard negatives); the rest are uniform."""
    max_window_pixels: int = 0
    """In larger images, each step's rays and the CNN's losses keep to one random window of the image's aspect with
    this many pixels, so a step's cost does not grow with image size, but the CNN learns no negatives beyond its
    window; 0 (default): whole images, as masked images always are."""


class ImageGroupedPixelSampler(PixelSampler):
    """Samples ``images_per_batch`` images x equal numbers of random pixels, image-major (each image's inside one
    random window with ``max_window_pixels``)."""

    config: ImageGroupedPixelSamplerConfig

    def __init__(self, config: ImageGroupedPixelSamplerConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.windows: Optional[Tensor] = None
        """The last batch's windows (G, 4): y0, x0, h, w per group (None for masked images)."""

    def rays_per_image(self, num_images: int) -> int:
        return self.num_rays_per_batch // min(self.config.images_per_batch, num_images)

    def sample(self, image_batch: Dict) -> Dict:
        """nerfstudio's pixel batch plus ``group_windows`` (G, 4): each group's window (y0, x0, h, w)."""
        self.windows = None
        batch = super().sample(image_batch)
        if self.windows is not None:
            batch["group_windows"] = self.windows
        return batch

    def sample_method(
        self,
        batch_size: int,
        num_images: int,
        image_height: int,
        image_width: int,
        mask: Optional[Tensor] = None,
        device: Union[torch.device, str] = "cpu",
    ) -> Int[Tensor, "batch_size 3"]:
        groups = min(self.config.images_per_batch, num_images)
        if batch_size % groups:
            raise ValueError(
                f"train_num_rays_per_batch={batch_size} is not a multiple of images_per_batch={groups}: "
                "set --pipeline.datamanager.train-num-rays-per-batch to a multiple of it."
            )
        use_mask = mask if isinstance(mask, Tensor) and not self.config.ignore_mask else None
        if use_mask is None:
            size = window_size(image_height, image_width, self.config.max_window_pixels)
            self.windows = random_windows(groups, image_height, image_width, size)
        return sample_grouped_pixels(
            num_images,
            image_height,
            image_width,
            groups,
            batch_size // groups,
            mask=use_mask,
            device=device,
            patch_size=self.config.patch_size,
            patch_dilation=self.config.patch_dilation,
            patch_fraction=self.config.patch_fraction,
            windows=self.windows if use_mask is None else None,
        )


@dataclass
class CrossfireDataManagerConfig(VanillaDataManagerConfig):
    """Vanilla data manager with image-grouped rays and the sampled images attached for the CNN."""

    _target: Type = field(default_factory=lambda: CrossfireDataManager)
    pixel_sampler: PixelSamplerConfig = field(default_factory=ImageGroupedPixelSamplerConfig)
    """Pixel sampler; the default groups rays by image, which the descriptor loss needs."""
    scene_bounds: Literal["auto", "dataparser"] = "auto"
    """auto: a scene the training views see from inside (a room) is modelled without scene contraction in a box
    that holds its content, found by triangulating SIFT matches between the views; dataparser: the dataparser's box
    and the model's contraction setting as given."""


class CrossfireDataManager(VanillaDataManager[InputDataset]):
    """Adds ``batch["group_images"]`` (G, h, w, 3: each group's window of its image, ``batch["group_windows"]``
    (G, 4: y0, x0, h, w) from the sampler), ``batch["image_size"]`` (H, W) and ``batch["rays_per_image"]`` to
    training batches."""

    config: CrossfireDataManagerConfig

    def __init__(self, config: CrossfireDataManagerConfig, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        if config.scene_bounds == "auto":
            self.apply_scene_bounds(self.measure_scene_bounds())

    @property
    def loader_workers(self) -> int:
        """Image-loading workers: nerfstudio's 4 per process, at most one per CPU core this process may use (more
        only wait on one another, and torch warns of it)."""
        return loader_workers(self.world_size)

    def setup_train(self) -> None:
        """nerfstudio's training loaders with ``loader_workers`` workers."""
        assert self.train_dataset is not None
        CONSOLE.print("Setting up training dataset...")
        self.train_image_dataloader = CacheDataloader(
            self.train_dataset, num_images_to_sample_from=self.config.train_num_images_to_sample_from,
            num_times_to_repeat_images=self.config.train_num_times_to_repeat_images, device=self.device,
            num_workers=self.loader_workers, pin_memory=True, collate_fn=self.config.collate_fn,
            exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )  # fmt: skip
        self.iter_train_image_dataloader = iter(self.train_image_dataloader)
        self.train_pixel_sampler = self._get_pixel_sampler(self.train_dataset, self.config.train_num_rays_per_batch)
        self.train_ray_generator = RayGenerator(self.train_dataset.cameras.to(self.device))

    def setup_eval(self) -> None:
        """nerfstudio's evaluation loaders with ``loader_workers`` workers."""
        assert self.eval_dataset is not None
        CONSOLE.print("Setting up evaluation dataset...")
        self.eval_image_dataloader = CacheDataloader(
            self.eval_dataset, num_images_to_sample_from=self.config.eval_num_images_to_sample_from,
            num_times_to_repeat_images=self.config.eval_num_times_to_repeat_images, device=self.device,
            num_workers=self.loader_workers, pin_memory=True, collate_fn=self.config.collate_fn,
            exclude_batch_keys_from_device=self.exclude_batch_keys_from_device,
        )  # fmt: skip
        self.iter_eval_image_dataloader = iter(self.eval_image_dataloader)
        self.eval_pixel_sampler = self._get_pixel_sampler(self.eval_dataset, self.config.eval_num_rays_per_batch)
        self.eval_ray_generator = RayGenerator(self.eval_dataset.cameras.to(self.device))
        self.fixed_indices_eval_dataloader = FixedIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.loader_workers
        )
        self.eval_dataloader = RandIndicesEvalDataloader(
            input_dataset=self.eval_dataset, device=self.device, num_workers=self.loader_workers
        )

    def measure_scene_bounds(self) -> SceneBounds:
        """``scene_bounds.scene_bounds`` of the training views (cameras in the normalised frame)."""
        outputs = self.train_dataparser_outputs
        c2ws = as_4x4(outputs.cameras.camera_to_worlds.numpy())
        Ks = outputs.cameras.get_intrinsics_matrices().numpy().astype(np.float64)
        greys = [np.asarray(Image.open(path).convert("L")) for path in outputs.image_filenames]
        return scene_bounds(greys, c2ws, Ks)

    def apply_scene_bounds(self, bounds: SceneBounds) -> None:
        """Hand ``bounds`` to the model (dataset metadata) and, for a scene seen from inside, give both datasets its
        box."""
        for dataset in (self.train_dataset, self.eval_dataset):
            if dataset is None:
                continue
            dataset.metadata[SCENE_BOUNDS_KEY] = bounds.as_dict()
            if bounds.inside:
                dataset.scene_box = SceneBox(aabb=torch.tensor([[-bounds.scale] * 3, [bounds.scale] * 3]))
        if bounds.inside:
            CONSOLE.print(
                f"The training views see the scene from inside: no scene contraction, scene box +/-{bounds.scale:g} "
                "(--pipeline.datamanager.scene-bounds dataparser keeps the dataparser's box and contraction)."
            )

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        self.train_count += 1
        image_batch = next(self.iter_train_image_dataloader)
        assert self.train_pixel_sampler is not None
        if not isinstance(image_batch["image"], Tensor):
            raise ValueError(
                f"crossfire needs all training images at one resolution ({self.config.data}); "
                "resize them, or pass --pipeline.datamanager.dataparser.downscale-factor consistently."
            )
        batch = self.train_pixel_sampler.sample(image_batch)
        ray_bundle = self.train_ray_generator(batch["indices"])
        if isinstance(self.train_pixel_sampler, ImageGroupedPixelSampler):
            rays_per_image = self.train_pixel_sampler.rays_per_image(len(image_batch["image_idx"]))
            group_ids = batch["indices"][::rays_per_image, 0].cpu()
            positions = (image_batch["image_idx"].cpu()[None, :] == group_ids[:, None]).float().argmax(dim=1)
            images = image_batch["image"][positions]
            windows = batch.get("group_windows")  # the sampler's; none for masked images, which stay whole
            if windows is not None and tuple(windows[0, 2:].tolist()) != tuple(images.shape[1:3]):
                h, w = windows[0, 2:].tolist()
                corners = windows[:, :2].tolist()
                images = torch.stack([image[y : y + h, x : x + w] for image, (y, x) in zip(images, corners)])
            batch["group_images"] = images
            batch["image_size"] = tuple(image_batch["image"].shape[1:3])
            batch["rays_per_image"] = rays_per_image
        return ray_bundle, batch


def loader_workers(world_size: int = 1) -> int:
    """nerfstudio's 4 image-loading workers per process, capped at the CPU cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4 * world_size, cores))
