"""Rendering the map at a hypothesised pose: depth, colour, the 3D point of every pixel and, when asked, descriptors.

Renders go through ``CrossfireModel.render_for_localization``: no viewer outputs, and the descriptor field only
for matchers that read it. Poses here are camera-to-world in nerfstudio's normalised frame (OpenGL convention),
intrinsics follow nerfstudio's convention (pixel centres at +0.5, so cx = W/2 for a centred principal point).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor


@dataclass
class RenderedView:
    """What the map predicts for one camera; all tensors (h, w, C) on the model's device."""

    depth: Tensor
    rgb: Tensor
    accumulation: Tensor
    points: Tensor
    """World point of each pixel (normalised frame): ray origin + unit direction * median depth."""
    K: np.ndarray
    """Intrinsics of this render (3x3)."""
    descriptor: Optional[Tensor] = None
    """Rendered descriptor-field output; None when the renderer was built without descriptors."""
    expected_depth: Optional[Tensor] = None
    """The weights' mean distance along each ray (``depth`` is the median: where opacity reaches 0.5)."""
    origins: Optional[Tensor] = None
    """(h, w, 3) ray origins."""
    directions: Optional[Tensor] = None
    """(h, w, 3) unit ray directions: ``points = origins + directions * depth``."""


def make_camera(c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> Cameras:
    """A single nerfstudio camera from a 3x4/4x4 camera-to-world (normalised frame) and intrinsics."""
    return Cameras(
        camera_to_worlds=torch.as_tensor(np.asarray(c2w)[:3, :4], dtype=torch.float32)[None],
        fx=float(K[0, 0]),
        fy=float(K[1, 1]),
        cx=float(K[0, 2]),
        cy=float(K[1, 2]),
        width=int(width),
        height=int(height),
        camera_type=CameraType.PERSPECTIVE,
    )


@contextmanager
def proposal_samples_scaled(model, share: float) -> Iterator[None]:
    """Within the block, nerfacto's proposal stages take ``share`` of their samples per ray (at least 1 each; the
    final stage's count is kept). Proposal sampling is most of a CPU render's cost."""
    sampler = model.proposal_sampler
    counts = tuple(sampler.num_proposal_samples_per_ray)
    if share != 1.0:
        sampler.num_proposal_samples_per_ray = tuple(max(1, round(n * share)) for n in counts)
    try:
        yield
    finally:
        sampler.num_proposal_samples_per_ray = counts


class _NoColour(torch.nn.Module):
    """Stands in for nerfacto's colour MLP: black for every sample, without evaluating anything."""

    def forward(self, features: Tensor) -> Tensor:
        return features.new_zeros(features.shape[0], 3)


@contextmanager
def colour_skipped(model, skip: bool = True) -> Iterator[None]:
    """Within the block (when ``skip``), nerfacto's colour MLP is not run and the rendered rgb is black: for
    renders that read only depth and opacity (the map index), whose density, weights and depths are unchanged."""
    field = model.field
    head = field.mlp_head
    if skip:
        field.mlp_head = _NoColour()
    try:
        yield
    finally:
        field.mlp_head = head


class MapRenderer:
    """Renders a trained crossfire model and counts renders and seconds (rendering dominates on CPU)."""

    def __init__(self, model, descriptors: bool = False, proposal_share: float = 1.0, colour: bool = True) -> None:
        self.model = model
        self.descriptors = descriptors
        """Render the descriptor field too (only the field-descriptor matcher reads it)."""
        self.colour = colour
        """Render colour; without it ``rgb`` is black and the colour MLP is not run (``colour_skipped``)."""
        self.proposal_share = proposal_share
        """Share of the map's proposal samples per ray (``proposal_samples_scaled``); 1: training's counts."""
        self.num_renders = 0
        self.seconds = 0.0

    @torch.no_grad()
    def render(self, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> RenderedView:
        start = time.perf_counter()
        camera = make_camera(c2w, K, width, height).to(self.model.device)
        bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
        with proposal_samples_scaled(self.model, self.proposal_share), colour_skipped(self.model, not self.colour):
            outputs = self.model.render_for_localization(bundle, descriptors=self.descriptors)
        points = bundle.origins + bundle.directions * outputs["depth"]
        self.num_renders += 1
        self.seconds += time.perf_counter() - start
        return RenderedView(
            depth=outputs["depth"],
            rgb=outputs["rgb"],
            accumulation=outputs["accumulation"],
            points=points,
            K=np.asarray(K, dtype=np.float64),
            descriptor=outputs.get("descriptor"),
            expected_depth=outputs.get("expected_depth"),
            origins=bundle.origins,
            directions=bundle.directions,
        )
