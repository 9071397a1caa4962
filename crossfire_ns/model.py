"""CrossfireModel: nerfacto plus a position-only descriptor field and a jointly trained feature CNN.

The descriptor of a ray is rendered with nerfacto's own volume-rendering weights (top-k samples by
weight, detached by default) and L2-normalised. During training, a symmetric InfoNCE loss pulls the
rendered descriptor and the CNN feature at the same pixel together and pushes the other pixels of the
same image away, except those whose rendered 3D points are near (they are the same place). A distillation
term supervises the field directly and densely: at the surface points earlier training rays found
(``surface_cache``), the field must match the CNN feature of the pixel that saw them, thousands per step
without volume rendering. A self-supervised loss trains the CNN alone across random warps of the training
images (``warp_supervision``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import RayBundle, RaySamples
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.renderers import DepthRenderer
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor
from torch.nn import Parameter

from crossfire_ns.compat import offline_lpips, use_gather_hash_encoding, use_linf_contraction
from crossfire_ns.descriptor_field import DescriptorField
from crossfire_ns.encoder import FeatureEncoder, FeatureEncoderConfig, sample_features
from crossfire_ns.losses import dense_negative_info_nce, masked_info_nce
from crossfire_ns.scene_bounds import SCENE_BOUNDS_KEY
from crossfire_ns.surface_cache import SurfaceCache
from crossfire_ns.warp_supervision import RandomWarp, WarpedPairs


class _SampleCapturingDepthRenderer(DepthRenderer):
    """nerfacto's expected-depth renderer that also keeps the final samples and weights it was given.

    nerfacto's ``get_outputs`` does not return its field samples at eval time; capturing them here lets
    the descriptor reuse the exact samples and weights of the colour without copying nerfacto's code.
    """

    def forward(self, weights, ray_samples, ray_indices=None, num_rays=None):  # type: ignore[override]
        self.captured: Optional[Tuple[Tensor, RaySamples]] = (weights, ray_samples)
        return super().forward(weights, ray_samples, ray_indices=ray_indices, num_rays=num_rays)


@dataclass
class CrossfireModelConfig(NerfactoModelConfig):
    """nerfacto + descriptor field + feature CNN."""

    _target: Type = field(default_factory=lambda: CrossfireModel)
    descriptor_dim: int = 32
    """Dimension D of descriptors (field) and features (CNN)."""
    descriptor_num_levels: int = 12
    """Hash-grid levels of the descriptor field."""
    descriptor_log2_hashmap_size: int = 17
    """log2 of the descriptor hash table size per level."""
    descriptor_max_res: int = 1024
    """Finest hash-grid resolution of the descriptor field."""
    descriptor_hidden_dim: int = 64
    """Width of the descriptor MLP."""
    descriptor_num_layers: int = 2
    """Layers of the descriptor MLP."""
    num_descriptor_samples: int = 8
    """Samples per ray (top-k by weight) at which descriptors are evaluated; the rest carry little weight."""
    detach_descriptor_weights: bool = True
    """Render descriptors with detached weights, so the descriptor loss cannot bend the geometry."""
    encoder: FeatureEncoderConfig = field(default_factory=FeatureEncoderConfig)
    """The feature CNN."""
    descriptor_loss_mult: float = 1.0
    """Weight of the descriptor (metric-learning) loss."""
    descriptor_loss_start_step: int = 500
    """Warm-up: the descriptor loss starts at this step, once rendered depth means something."""
    descriptor_temperature: float = 0.1
    """InfoNCE temperature on cosine similarities."""
    negative_radius_px: float = 1.5
    """Pixels whose rendered 3D points lie closer than this many pixel footprints (at their depth) are not
    negatives: they see the same place."""
    dense_negative_loss_mult: float = 1.0
    """Weight of the second InfoNCE term that scores each rendered descriptor against the CNN features of
    every pixel of its image (as localization will); 0 turns it off."""
    dense_negative_radius_px: float = 3.0
    """In that term, feature cells within this many pixels of the ray's own pixel are not negatives."""
    distill_loss_mult: float = 1.0
    """Weight of the descriptor field's direct supervision: the field, read at the surface points where earlier
    training rays met the scene (a hash-grid lookup, no volume rendering; ``surface_cache``), must match the CNN
    feature of the pixel that saw each point and differ from the other sampled pixels of its image (near points
    excluded, as in the descriptor loss). Thousands of points per step for the price of the field alone; the CNN
    is trained by it too. Starts with the descriptor loss; 0 turns it off."""
    distill_points_per_image: int = 512
    """Surface points per batch image in that term (its in-image negatives grow with the square of this)."""
    distill_warp_images_only: bool = False
    """The distillation term reads only the warp loss's images (the first ``warp_images_per_batch``), whose CNN
    features the step computes anyway: the CNN then encodes 2W images per step instead of B + W (with B = 4 and
    W = 2, a third of the CNN's cost). Raise ``distill_points_per_image`` to keep the points per step."""
    distill_max_age: int = 500
    """Surface points written more than this many steps ago are not used: the geometry has moved on since."""
    distill_min_accumulation: float = 0.9
    """Only rays at least this opaque leave a surface point (the depth of a half-transparent ray is no surface)."""
    distill_cells_per_image: int = 16384
    """At most this many remembered points per training image (one per cell of the CNN's output grid, coarser
    for large images), which bounds the cache's memory."""
    warp_loss_mult: float = 1.0
    """Weight of the CNN's self-supervised warp loss: the features of each batch image and of a randomly
    warped, re-lit, blurred copy must agree at corresponding pixels and differ from every other pixel. It needs
    no rendered depth, runs from the first step, and makes the features pixel-accurate and lighting-robust
    0 turns it off."""
    warp_images_per_batch: Optional[int] = None
    """The warp loss uses this many of the batch's images (None: all). Each costs one more CNN forward and backward
    pass, the largest share of a crossfire-lite step on CPU."""
    warp_points_per_image: int = 256
    """Correspondences per image in the warp loss."""
    warp_negative_radius_px: float = 0.5
    """In the warp loss, feature cells within this many pixels of the true correspondence are not negatives."""
    warp_max_degrees: float = 20.0
    """Largest in-plane rotation of the random warps (a query camera may roll more than the training ones)."""
    warp_max_blur_sigma: float = 1.5
    """Largest Gaussian blur (px) of the warped copy, standing in for the softness of renders; 0: no blur."""


class CrossfireModel(NerfactoModel):
    """nerfacto with a rendered descriptor output and the CNN that matches it."""

    config: CrossfireModelConfig

    def populate_modules(self):
        bounds = self.kwargs.get("metadata", {}).get(SCENE_BOUNDS_KEY)
        if bounds is not None and bounds["inside"]:  # a room seen from inside: its walls get the field's resolution
            self.config.disable_scene_contraction = True
        with offline_lpips():
            super().populate_modules()
        use_linf_contraction(self)  # before the descriptor field takes the field's contraction
        self.renderer_expected_depth = _SampleCapturingDepthRenderer(method="expected")
        self.descriptors_enabled = True
        """Whether ``get_outputs`` renders the descriptor field (off inside ``render_for_localization`` when the
        matcher does not read it)."""
        self.descriptor_field = DescriptorField(
            self.scene_box.aabb,
            descriptor_dim=self.config.descriptor_dim,
            num_levels=self.config.descriptor_num_levels,
            log2_hashmap_size=self.config.descriptor_log2_hashmap_size,
            max_res=self.config.descriptor_max_res,
            hidden_dim=self.config.descriptor_hidden_dim,
            num_layers=self.config.descriptor_num_layers,
            spatial_distortion=self.field.spatial_distortion,
            implementation=self.config.implementation,
        )
        self.encoder: FeatureEncoder = self.config.encoder.setup(descriptor_dim=self.config.descriptor_dim)
        self.random_warp = RandomWarp(
            degrees=self.config.warp_max_degrees, max_blur_sigma=self.config.warp_max_blur_sigma
        )
        self.surface_cache: Optional[SurfaceCache] = None
        """Surface points of recent training rays, for the distillation term (allocated on the first batch)."""
        use_gather_hash_encoding(self)  # the radiance, proposal and descriptor fields' torch hash grids
        from crossfire_ns.viewer.tools import CrossfireViewerTools  # viewer controls; no parameters

        self.crossfire_viewer = CrossfireViewerTools(self)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["descriptor_field"] = list(self.descriptor_field.parameters())
        groups["encoder"] = list(self.encoder.parameters())
        return groups

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)

        def set_step(step: int) -> None:
            self.step = step

        callbacks.append(
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step, update_every_num_iters=1)
        )
        return callbacks

    def render_descriptors(self, ray_samples: RaySamples, weights: Tensor) -> Tensor:
        """Volume-render L2-normalised descriptors from the top-k samples by weight."""
        if self.config.detach_descriptor_weights:
            weights = weights.detach()
        k = min(self.config.num_descriptor_samples, weights.shape[-2])
        top_weights, index = torch.topk(weights[..., 0], k, dim=-1)
        positions = ray_samples.frustums.get_positions().detach()
        positions = torch.gather(positions, -2, index[..., None].expand(*index.shape, 3))
        descriptors = self.descriptor_field(positions)
        return F.normalize((top_weights[..., None] * descriptors).sum(dim=-2), dim=-1)

    def get_outputs(self, ray_bundle: RayBundle):
        outputs = super().get_outputs(ray_bundle)
        weights, ray_samples = self.renderer_expected_depth.captured
        self.renderer_expected_depth.captured = None
        wanted = self.config.descriptor_loss_mult > 0 if self.training else self.descriptors_enabled
        if wanted:  # training renders them only for the descriptor loss
            outputs["descriptor"] = self.render_descriptors(ray_samples, weights)
        if self.training:
            depth = outputs["expected_depth"].detach()
            outputs["ray_points"] = ray_bundle.origins + ray_bundle.directions * depth
            outputs["ray_footprint"] = depth[..., 0] * ray_bundle.pixel_area[..., 0].sqrt()
        return outputs

    @torch.no_grad()
    def get_outputs_for_camera_ray_bundle(self, camera_ray_bundle: RayBundle) -> Dict[str, Tensor]:
        """nerfstudio's per-frame rendering plus the viewer outputs descriptor_pca and descriptor_similarity."""
        outputs = super().get_outputs_for_camera_ray_bundle(camera_ray_bundle)
        outputs.update(self.crossfire_viewer.image_outputs(outputs))
        return outputs

    @torch.no_grad()
    def render_for_localization(self, camera_ray_bundle: RayBundle, descriptors: bool = True) -> Dict[str, Tensor]:
        """The plain per-frame render that localization reads: nerfacto's outputs (rgb, depth, accumulation, ...)
        and, only when ``descriptors``, the descriptor field; never the viewer outputs."""
        enabled = self.descriptors_enabled
        self.descriptors_enabled = descriptors
        try:
            return super().get_outputs_for_camera_ray_bundle(camera_ray_bundle)
        finally:
            self.descriptors_enabled = enabled

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, H, W, 3|4) images in [0, 1] to dense features (B, D, H/s, W/s); RGBA is composited on white."""
        return self.encoder(self._composited_chw(images))

    def _composited_chw(self, images: Tensor) -> Tensor:
        """(B, H, W, 3|4) in [0, 1] -> (B, 3, H, W) on the model's device; RGBA is composited on white."""
        if images.shape[-1] == 4:
            images = images[..., :3] * images[..., 3:] + (1.0 - images[..., 3:])
        return images.permute(0, 3, 1, 2).float().to(self.device)

    def _training_batch(self, batch: Dict) -> bool:
        """A training step's batch with its images attached (what every crossfire loss needs)."""
        return self.training and "group_images" in batch

    def _field_supervised(self, batch: Dict) -> bool:
        """Past the warm-up, on a training batch: the field's losses may run."""
        return self._training_batch(batch) and self.step >= self.config.descriptor_loss_start_step

    def descriptor_loss_active(self, batch: Dict) -> bool:
        return self._field_supervised(batch) and self.config.descriptor_loss_mult > 0

    def distill_loss_active(self, batch: Dict) -> bool:
        return self._field_supervised(batch) and self.config.distill_loss_mult > 0

    def warp_loss_active(self, batch: Dict) -> bool:
        return self._training_batch(batch) and self.config.warp_loss_mult > 0

    def features_for_every_image(self, batch: Dict) -> bool:
        """Whether this step needs the CNN features of all the batch's images, not only the warped ones."""
        distill_all = self.distill_loss_active(batch) and not (
            self.warp_loss_active(batch) and self.config.distill_warp_images_only
        )
        return self.descriptor_loss_active(batch) or distill_all

    def get_metrics_dict(self, outputs, batch):
        metrics_dict = super().get_metrics_dict(outputs, batch)
        if self._training_batch(batch) and self.config.distill_loss_mult > 0:  # from step 0: full at the warm-up's end
            self.remember_surface(outputs, batch)
        if not (self.descriptor_loss_active(batch) or self.distill_loss_active(batch) or self.warp_loss_active(batch)):
            return metrics_dict
        features, warped = self.encode_batch(
            batch["group_images"], self.warp_loss_active(batch), self.features_for_every_image(batch)
        )
        if self.descriptor_loss_active(batch):
            loss, stats = self.descriptor_loss(outputs, batch, features)
            metrics_dict["descriptor_loss"] = loss
            metrics_dict.update({f"descriptor_{k}": v for k, v in stats.items()})
        if self.distill_loss_active(batch):
            distilled = self.distill_loss(batch, features)
            if distilled is not None:
                metrics_dict["distill_loss"] = distilled[0]
                metrics_dict["distill_match_accuracy"] = distilled[1]["match_accuracy"]
        if warped is not None:
            loss, stats = self.warp_loss(batch["group_images"], features, *warped)
            metrics_dict["warp_loss"] = loss
            metrics_dict["warp_match_accuracy"] = stats["dense_match_accuracy"]
        return metrics_dict

    def _window_corners(self, batch: Dict) -> Tensor:
        """(G, 1, 2) top-left (y, x) of each group's window in its image (zeros for whole images)."""
        windows = batch.get("group_windows")
        if windows is None:
            return torch.zeros(batch["group_images"].shape[0], 1, 2, device=self.device)
        return windows[:, None, :2].to(self.device).float()

    def _image_size(self, batch: Dict) -> Tuple[int, int]:
        """(H, W) of the training images (the group images may be windows of them)."""
        return tuple(batch.get("image_size", batch["group_images"].shape[1:3]))

    def descriptor_loss(self, outputs, batch, features: Tensor) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Rendered descriptors vs the CNN features at their pixels (and, densely, at every pixel)."""
        rays_per_image = int(batch["rays_per_image"])
        groups = batch["group_images"].shape[0]
        yx = batch["indices"][:, 1:].to(self.device).float().view(groups, rays_per_image, 2)
        yx = yx - self._window_corners(batch)
        image_size = tuple(batch["group_images"].shape[1:3])
        encoded = sample_features(features, yx.flip(-1) + 0.5, image_size)
        rendered = outputs["descriptor"].view(groups, rays_per_image, -1)
        points = outputs["ray_points"].view(groups, rays_per_image, 3)
        radius = self.config.negative_radius_px * outputs["ray_footprint"].view(groups, rays_per_image)
        loss, stats = masked_info_nce(rendered, encoded, points, radius, self.config.descriptor_temperature)
        if self.config.dense_negative_loss_mult > 0:
            dense_loss, dense_stats = dense_negative_info_nce(
                rendered,
                encoded,
                features,
                yx.flip(-1) + 0.5,
                image_size,
                self.config.dense_negative_radius_px,
                self.config.descriptor_temperature,
            )
            loss = loss + self.config.dense_negative_loss_mult * dense_loss
            stats.update(dense_stats)
        return loss, stats

    def remember_surface(self, outputs, batch) -> None:
        """Write this step's opaque rays' expected-depth points into the surface cache."""
        if self.surface_cache is None:
            height, width = self._image_size(batch)
            cells = self.config.distill_cells_per_image
            cell_px = max(self.config.encoder.output_stride, math.ceil(math.sqrt(height * width / cells)))
            self.surface_cache = SurfaceCache(self.num_train_data, (height, width), cell_px, self.device)
        opaque = outputs["accumulation"][..., 0].detach() >= self.config.distill_min_accumulation
        self.surface_cache.write(batch["indices"], outputs["ray_points"], outputs["ray_footprint"], opaque, self.step)

    def distill_loss(self, batch, features: Tensor) -> Optional[Tuple[Tensor, Dict[str, Tensor]]]:
        """The field at remembered surface points vs the CNN features of the pixels that saw them: those of the
        batch's first ``len(features)`` images (all of them, or the warped ones only)."""
        if self.surface_cache is None:
            return None
        images = batch["indices"][:: int(batch["rays_per_image"]), 0][: features.shape[0]]
        windows = batch.get("group_windows")
        pixels, points, footprints = self.surface_cache.sample(
            images,
            self.config.distill_points_per_image,
            self.step,
            self.config.distill_max_age,
            windows=None if windows is None else windows[: features.shape[0]],
        )
        if pixels.shape[1] < 16:  # too few points yet for in-image negatives
            return None
        descriptors = F.normalize(self.descriptor_field(points), dim=-1)
        pixels = pixels - self._window_corners(batch)[: features.shape[0]].flip(-1)
        encoded = sample_features(features, pixels, tuple(batch["group_images"].shape[1:3]))
        radius = self.config.negative_radius_px * footprints
        return masked_info_nce(descriptors, encoded, points, radius, self.config.descriptor_temperature)

    def encode_batch(
        self, images: Tensor, warp: bool, every_image: bool = True
    ) -> Tuple[Tensor, Optional[Tuple[WarpedPairs, Tensor]]]:
        """Augmented CNN features of the batch's images (B, D, h, w) and, when ``warp``, random warps of the first
        W = ``warp_images_per_batch`` of them with their features (``warp_supervision``). One augmentation call and
        one CNN pass for all B + W images: cheaper on CPU than two, and every image still gets its own random
        augmentation. Without ``every_image`` (no field loss needs the other images, as in the warm-up) only the
        first W images are encoded and the features returned are theirs (W, D, h, w)."""
        chw = self._composited_chw(images)
        if not warp:
            return self.encoder(self.encoder.augment(chw)), None
        count = self.config.warp_images_per_batch or images.shape[0]
        pairs = self.random_warp(chw[:count], self.config.warp_points_per_image)
        encoded = chw if every_image else chw[:count]
        features = self.encoder(self.encoder.augment(torch.cat([encoded, pairs.warped])))
        return features[: encoded.shape[0]], (pairs, features[encoded.shape[0] :])

    def warp_loss(
        self, images: Tensor, features: Tensor, pairs: WarpedPairs, warped_features: Tensor
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """The CNN against itself across the random warps of the first W ``images``: their ``features`` against
        ``warped_features`` (W, D, h, w) of the warped copies."""
        image_size = tuple(images.shape[1:3])
        return dense_negative_info_nce(
            sample_features(features[: warped_features.shape[0]], pairs.pixels, image_size),
            sample_features(warped_features, pairs.warped_pixels, image_size),
            warped_features,
            pairs.warped_pixels,
            image_size,
            self.config.warp_negative_radius_px,
            self.config.descriptor_temperature,
            valid=pairs.valid,
        )

    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if metrics_dict is not None and "descriptor_loss" in metrics_dict:
            loss_dict["descriptor_loss"] = self.config.descriptor_loss_mult * metrics_dict["descriptor_loss"]
        if metrics_dict is not None and "distill_loss" in metrics_dict:
            loss_dict["distill_loss"] = self.config.distill_loss_mult * metrics_dict["distill_loss"]
        if metrics_dict is not None and "warp_loss" in metrics_dict:
            loss_dict["warp_loss"] = self.config.warp_loss_mult * metrics_dict["warp_loss"]
        return loss_dict
