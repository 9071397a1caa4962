"""The scene's box from its training views: a room seen from inside is found, an orbit and a forward-facing scene are
left to nerfacto's defaults, and the model takes the decision (no contraction) from the datamanager."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossfire_ns.geometry import as_4x4
from crossfire_ns.scene_bounds import SCENE_BOUNDS_KEY, axes_convergence, direction_coverage, scene_bounds
from crossfire_ns.synthetic.cameras import look_at


def _ring(n: int, inward: bool) -> np.ndarray:
    """n cameras on a circle of radius 1 at height 0, looking at the centre (an orbit) or away from it."""
    poses = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        eye = np.array([np.cos(a), np.sin(a), 0.0])
        poses.append(look_at(eye, eye * (0.0 if inward else 3.0)))
    return np.stack(poses)


def test_an_orbits_axes_converge_and_a_rooms_diverge():
    assert axes_convergence(_ring(12, inward=True)) < 0.05
    assert axes_convergence(_ring(12, inward=False)) == float("inf")  # they meet only behind their backs
    rng = np.random.default_rng(0)
    scattered = np.stack([look_at(p, p + d) for p, d in zip(rng.uniform(-1, 1, (12, 3)), rng.normal(size=(12, 3)))])
    assert axes_convergence(scattered) > 0.5


def test_direction_coverage_counts_the_horizontal_directions_that_hold_points():
    cameras = _ring(8, inward=True)
    up = cameras[:, :3, 1].mean(0)
    side = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    around = np.stack([np.cos(t) * side + np.sin(t) * np.cross(up, side) for t in np.linspace(0, 2 * np.pi, 400)])
    assert direction_coverage(5 * around, cameras) == 1.0
    assert direction_coverage(np.tile(5 * side, (400, 1)), cameras) == 1 / 8  # one direction only: forward-facing


def _normalised_views(scene: Path):
    """The scene's training views as nerfstudio's dataparser gives them (normalised frame)."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    outputs = NerfstudioDataParserConfig(data=scene, eval_mode="all").setup().get_dataparser_outputs("train")
    greys = [np.asarray(Image.open(path).convert("L")) for path in outputs.image_filenames]
    c2ws = as_4x4(outputs.cameras.camera_to_worlds.numpy())
    return greys, c2ws, outputs.cameras.get_intrinsics_matrices().numpy().astype(np.float64)


@pytest.mark.parametrize("layout", ["inside-out", "orbit"])
def test_a_generated_room_is_seen_from_inside_and_an_orbit_is_not(tmp_path, layout):
    from crossfire_ns.synthetic import SyntheticSceneConfig, generate_scene

    config = SyntheticSceneConfig(width=128, height=96, num_train=24, num_query=1, seed=5, layout=layout)
    bounds = scene_bounds(*_normalised_views(generate_scene(tmp_path / layout, config)))
    assert bounds.points >= 50
    if layout == "inside-out":  # the walls surround the cameras, beyond their unit box
        assert bounds.inside and bounds.scale > 2 and bounds.coverage >= 0.75
    else:
        assert not bounds.inside and bounds.scale == 1.0 and bounds.convergence < 0.5


def test_the_model_drops_scene_contraction_for_a_scene_seen_from_inside(no_network, tmp_path, monkeypatch):
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from crossfire_ns.model import CrossfireModelConfig

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))

    def field_distortion(inside: bool):
        box = SceneBox(aabb=torch.tensor([[-8.0] * 3, [8.0] * 3]))
        metadata = {SCENE_BOUNDS_KEY: {"inside": inside, "scale": 8.0}}
        config = CrossfireModelConfig(
            implementation="torch", num_levels=4, log2_hashmap_size=12, descriptor_dim=8, num_descriptor_samples=3
        )
        model = config.setup(scene_box=box, num_train_data=3, metadata=metadata, device="cpu")
        return model.field.spatial_distortion, model.descriptor_field

    assert field_distortion(True)[0] is None
    assert field_distortion(False)[0] is not None
