"""iNeRF-style baseline: refine the top-1 prior by gradient descent on the photometric error of rendered rays.

The pose update is an se(3) tangent applied in the camera frame, through nerfstudio's own
``camera_opt_to_camera`` hook (the mechanism its camera optimiser uses), so rays stay differentiable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence, Type

import numpy as np
import torch
from nerfstudio.cameras.lie_groups import exp_map_SE3

from crossfire_ns.localize.matchers.base import Matcher, MatcherConfig, PoseEstimate
from crossfire_ns.localize.render import make_camera


@dataclass
class PhotometricMatcherConfig(MatcherConfig):
    """iNeRF-style pose refinement of the top-1 prior on rendered colour."""

    _target: Type = field(default_factory=lambda: PhotometricMatcher)
    steps: int = 150
    """Gradient steps."""
    rays: int = 512
    """Rays rendered per step."""
    lr: float = 5e-3
    """Adam learning rate on the se(3) pose update."""


class PhotometricMatcher(Matcher):
    config: PhotometricMatcherConfig

    def estimate(self, image: np.ndarray, K: np.ndarray, priors: Sequence[np.ndarray]) -> PoseEstimate:
        if not priors:
            return PoseEstimate(success=False, message="no prior")
        start = time.perf_counter()
        result = photometric_refine(
            self.model, image, K, priors[0], steps=self.config.steps, rays_per_step=self.config.rays, lr=self.config.lr
        )
        self.renderer.seconds += time.perf_counter() - start
        message = f"photometric loss {result.initial_loss:.4f} -> {result.final_loss:.4f}"
        return PoseEstimate(success=True, c2w=result.c2w, message=message)


@dataclass
class PhotometricResult:
    c2w: np.ndarray
    """Refined camera-to-world (normalised frame), 4x4."""
    final_loss: float
    initial_loss: float


def _compose(c2w: np.ndarray, delta: torch.Tensor) -> np.ndarray:
    """c2w @ delta, the way nerfstudio applies ``camera_opt_to_camera``."""
    base, step = np.eye(4), np.eye(4)
    base[:3, :4] = np.asarray(c2w)[:3, :4]
    step[:3, :4] = delta.detach().cpu().numpy()[0]
    return base @ step


def photometric_refine(
    model,
    image: np.ndarray,
    K: np.ndarray,
    prior_c2w: np.ndarray,
    steps: int = 100,
    rays_per_step: int = 512,
    lr: float = 1e-2,
    seed: int = 0,
) -> PhotometricResult:
    """Minimise mean squared colour error between the query and rays rendered at the pose."""
    height, width = image.shape[:2]
    target = torch.from_numpy(np.array(image)).float().div(255.0).to(model.device)
    camera = make_camera(prior_c2w, K, width, height).to(model.device)
    tangent = torch.zeros(1, 6, device=model.device, requires_grad=True)
    optimizer = torch.optim.Adam([tangent], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for param in trainable:  # gradients only for the pose
        param.requires_grad_(False)
    try:
        losses = _descend(model, camera, target, tangent, optimizer, generator, steps, rays_per_step)
    finally:
        for param in trainable:
            param.requires_grad_(True)
    delta = exp_map_SE3(tangent.detach())
    return PhotometricResult(
        c2w=_compose(prior_c2w, delta), final_loss=float(np.mean(losses[-5:])), initial_loss=losses[0]
    )


def _descend(model, camera, target, tangent, optimizer, generator, steps: int, rays_per_step: int) -> list:
    height, width = target.shape[:2]
    losses = []
    for _ in range(steps):
        ys = torch.randint(height, (rays_per_step,), generator=generator)
        xs = torch.randint(width, (rays_per_step,), generator=generator)
        coords = torch.stack([ys, xs], dim=-1).float().to(model.device) + 0.5
        with torch.enable_grad():
            bundle = camera.generate_rays(
                camera_indices=0, coords=coords, camera_opt_to_camera=exp_map_SE3(tangent).expand(len(coords), 3, 4)
            )
            rgb = model(bundle)["rgb"]  # forward applies the near/far collider first
            loss = torch.nn.functional.mse_loss(rgb, target[ys.to(model.device), xs.to(model.device)])
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses
