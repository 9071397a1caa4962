"""A training camera with lens distortion: the map hands localization its images as the pinhole camera sees them."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from crossfire_ns.map import CrossfireMap

H, W, F, CX, CY = 60, 80, 50.0, 40.0, 30.0


class _Dataset:
    def __init__(self, cameras: Cameras, image: torch.Tensor) -> None:
        self.cameras, self.image = cameras, image

    def __len__(self) -> int:
        return 1

    def get_image_float32(self, index: int) -> torch.Tensor:
        return self.image.clone()


def _map(distortion, image: torch.Tensor) -> CrossfireMap:
    cameras = Cameras(
        camera_to_worlds=torch.eye(4)[None, :3], fx=F, fy=F, cx=CX, cy=CY, width=W, height=H,
        distortion_params=None if distortion is None else torch.tensor([distortion], dtype=torch.float32),
        camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
    pipeline = SimpleNamespace(datamanager=SimpleNamespace(train_dataset=_Dataset(cameras, image)))
    return CrossfireMap(pipeline, np.eye(4)[:3], 1.0)


def _blob(x: float, y: float, sigma: float = 1.5) -> torch.Tensor:
    """(H, W, 3) image of a Gaussian dot centred on (x, y) in nerfstudio's pixel convention (centres at +0.5)."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    dot = torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return dot[..., None].expand(H, W, 3).float().contiguous()


def _centroid(image: torch.Tensor):
    grey = image[..., 0].double()
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    return float((grey * xs).sum() / grey.sum()), float((grey * ys).sum() / grey.sum())


def test_a_distorted_training_image_is_undistorted_to_the_rays_nerfstudio_trained_on():
    """A dot seen at a distorted pixel lands, in ``training_image``, where the pinhole K projects the ray nerfstudio
    casts through that pixel, 1.4 px from where it was."""
    distortion = [0.2, -0.05, 0.0, 0.0, 0.01, -0.005]  # nerfstudio's (k1, k2, k3, k4, p1, p2)
    seen = (65.5, 12.5)  # (x, y) in the distorted image
    crossfire_map = _map(distortion, _blob(*seen))
    ray = crossfire_map.train_cameras.generate_rays(0, coords=torch.tensor([[seen[1], seen[0]]]))
    d = ray.directions[0].double()  # camera frame = world (identity pose), OpenGL: looking down -z, y up
    expected = (F * float(d[0] / -d[2]) + CX, F * float(-d[1] / -d[2]) + CY)
    assert np.hypot(expected[0] - seen[0], expected[1] - seen[1]) > 1.0  # the distortion is not negligible here
    assert crossfire_map.has_distortion()
    assert _centroid(crossfire_map.training_image(0)) == pytest.approx(expected, abs=0.15)


def test_an_undistorted_camera_gets_its_image_unchanged():
    image = _blob(20.5, 40.5)
    crossfire_map = _map([0.0] * 6, image)
    assert not crossfire_map.has_distortion()
    assert torch.equal(crossfire_map.training_image(0), image)
    assert torch.equal(_map(None, image).training_image(0), image)
