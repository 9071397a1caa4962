"""CrossfireModel: offline construction, descriptor rendering, parameter groups, checkpoint loading."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nerfstudio.cameras.rays import Frustums, RayBundle, RaySamples
from nerfstudio.data.scene_box import SceneBox

from crossfire_ns import compat
from crossfire_ns.model import CrossfireModelConfig


@pytest.fixture
def model(no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    config = CrossfireModelConfig(
        implementation="torch", num_levels=4, log2_hashmap_size=12, descriptor_dim=8, num_descriptor_samples=3
    )
    box = SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]]))
    return config.setup(scene_box=box, num_train_data=3, metadata={}, device="cpu")


def test_builds_offline_without_lpips_weights(model):
    assert isinstance(model.lpips, compat.UnavailableLPIPS)
    assert torch.isnan(model.lpips(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)))


def test_param_groups_are_separate(model):
    groups = model.get_param_groups()
    assert {"proposal_networks", "fields", "descriptor_field", "encoder"} <= set(groups)
    ids = {name: {id(p) for p in params} for name, params in groups.items()}
    assert not ids["descriptor_field"] & ids["fields"]
    assert not ids["encoder"] & ids["descriptor_field"]


def _samples(num_rays: int, num_samples: int) -> RaySamples:
    starts = torch.linspace(0.1, 1.0, num_samples)[None, :, None].expand(num_rays, num_samples, 1)
    frustums = Frustums(
        origins=torch.zeros(num_rays, num_samples, 3),
        directions=F.normalize(torch.randn(num_rays, 1, 3), dim=-1).expand(num_rays, num_samples, 3),
        starts=starts,
        ends=starts + 0.05,
        pixel_area=torch.ones(num_rays, num_samples, 1),
    )
    return RaySamples(frustums=frustums)


def test_rendered_descriptor_is_unit_and_follows_the_dominant_sample(model):
    torch.manual_seed(0)
    samples = _samples(5, 6)
    weights = torch.full((5, 6, 1), 1e-4)
    weights[:, 2] = 0.99
    rendered = model.render_descriptors(samples, weights)
    assert rendered.shape == (5, 8)
    assert torch.allclose(rendered.norm(dim=-1), torch.ones(5), atol=1e-5)
    dominant = F.normalize(model.descriptor_field(samples.frustums.get_positions()[:, 2]), dim=-1)
    assert torch.allclose(rendered, dominant, atol=1e-2)


def test_descriptor_depends_on_position_only(model):
    samples = _samples(4, 5)
    weights = torch.softmax(torch.randn(4, 5, 1), dim=1)
    other = _samples(4, 5)  # other directions, same distances: positions differ
    assert not torch.allclose(model.render_descriptors(samples, weights), model.render_descriptors(other, weights))
    # Same positions reached with another sampling order give the same descriptor (no view dependence).
    flipped = RaySamples(
        frustums=Frustums(
            origins=samples.frustums.origins.flip(1),
            directions=samples.frustums.directions.flip(1),
            starts=samples.frustums.starts.flip(1),
            ends=samples.frustums.ends.flip(1),
            pixel_area=samples.frustums.pixel_area,
        )
    )
    assert torch.allclose(
        model.render_descriptors(samples, weights), model.render_descriptors(flipped, weights.flip(1)), atol=1e-5
    )


def test_weights_detached_by_default(model):
    samples = _samples(3, 4)
    weights = torch.softmax(torch.randn(3, 4, 1), dim=1).requires_grad_()
    model.render_descriptors(samples, weights).sum().backward()
    assert weights.grad is None
    model.config.detach_descriptor_weights = False
    model.render_descriptors(samples, weights).pow(2).sum().backward()
    assert weights.grad is not None


def test_get_outputs_in_eval_returns_descriptor(model):
    model.eval()
    bundle = RayBundle(
        origins=torch.zeros(6, 3),
        directions=F.normalize(torch.randn(6, 3), dim=-1),
        pixel_area=torch.ones(6, 1),
        camera_indices=torch.zeros(6, 1, dtype=torch.long),
        nears=torch.full((6, 1), 0.05),
        fars=torch.full((6, 1), 10.0),
    )
    with torch.no_grad():
        outputs = model.get_outputs(bundle)
    assert outputs["descriptor"].shape == (6, 8)
    assert {"rgb", "depth", "accumulation", "prop_depth_0"} <= set(outputs)
    assert model.renderer_expected_depth.captured is None, "captured samples must not be kept alive"


def test_nerfacto_style_checkpoint_loads_with_weights_only(tmp_path):
    # nerfacto checkpoints hold numpy scalars in scheduler state; torch>=2.6 refuses them by default.
    path = tmp_path / "step-000000001.ckpt"
    torch.save({"step": 1, "schedulers": {"fields": {"base_lrs": [np.float64(0.01)], "x": np.array([1.0])}}}, path)
    compat.allow_nerfstudio_checkpoints()
    loaded = torch.load(path, map_location="cpu")
    assert loaded["schedulers"]["fields"]["base_lrs"][0] == 0.01
    assert compat.load_checkpoint(path)["step"] == 1


def test_external_method_placeholders_skip_the_stack_walk_but_still_offer_the_install(monkeypatch):
    """nerfstudio builds a placeholder per installable external method; ours no longer walk the stack (~8 s per
    process start) and, built from anywhere else (the CLI), still offer the install."""
    import inspect

    from nerfstudio.configs import external_methods, method_configs

    placeholder = external_methods.ExternalMethodDummyTrainerConfig
    assert getattr(placeholder.__post_init__, "_crossfire_quick", False), "our method module was not discovered"
    assert sum(isinstance(c, placeholder) for c in method_configs.all_methods.values()) >= 10
    monkeypatch.setattr(inspect, "stack", lambda *args, **kwargs: pytest.fail("the stack was walked"))
    assert len(external_methods.get_external_methods()[0]) >= 10  # quietly: no install offer, no exit
    monkeypatch.undo()  # nerfstudio's own offer (which we call) walks the stack: that is only the CLI's path
    asked = []
    monkeypatch.setattr(external_methods.Confirm, "ask", lambda *args, **kwargs: asked.append(args) or False)
    method = next(m for m in external_methods.external_methods if m.pip_package)
    with pytest.raises(SystemExit):
        placeholder(method_name="x", method=method)
    assert len(asked) == 1


def test_the_linf_contraction_matches_nerfstudios_and_every_field_uses_it(model):
    from nerfstudio.field_components.spatial_distortions import SceneContraction

    torch.manual_seed(0)
    points = (torch.randn(2000, 3) * 2.0).requires_grad_()  # inside and outside the unit cube
    ours, theirs = compat.LinfSceneContraction(order=float("inf")), SceneContraction(order=float("inf"))
    expected = theirs(points)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), points)
    got = ours(points)
    (grad_got,) = torch.autograd.grad(got.square().sum(), points)
    assert torch.equal(got, expected) and torch.allclose(grad_got, grad_expected, atol=1e-6)
    assert (points.abs().amax(-1) > 1).float().mean() > 0.3 and got.abs().max() < 2
    used = [m.spatial_distortion for m in model.modules() if getattr(m, "spatial_distortion", None) is not None]
    assert len(used) >= 3 and all(type(d) is compat.LinfSceneContraction for d in used)  # field, proposals, descriptors


def test_the_gather_hash_encoding_matches_nerfstudios_and_every_hash_grid_uses_it(model):
    from nerfstudio.field_components.encodings import HashEncoding

    torch.manual_seed(0)
    theirs = HashEncoding(num_levels=6, log2_hashmap_size=12, max_res=512, implementation="torch")
    theirs.hash_table.data.normal_()  # values far from the 1e-3 initialisation, so differences would show
    ours = copy.deepcopy(theirs)
    compat.use_gather_hash_encoding(ours)
    assert type(ours) is compat.GatherHashEncoding and ours.state_dict().keys() == theirs.state_dict().keys()
    points = torch.rand(3000, 3)
    points[:10] = torch.tensor([0.0, 0.5, 1.0])  # on grid vertices: floor == ceil
    points.requires_grad_()
    weights = torch.randn(3000, 12)
    results = []
    for encoding in (theirs, ours):
        encoded = encoding(points)
        table_grad, point_grad = torch.autograd.grad((encoded * weights).sum(), [encoding.hash_table, points])
        results.append((encoded, table_grad, point_grad))
    for expected, got in zip(*results):  # float rounding differs (the point gradients sum large terms)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert results[0][1].abs().sum() > 0  # the gradients compared are not all zero
    encodings = [m for m in model.modules() if isinstance(m, HashEncoding)]
    assert len(encodings) >= 4 and all(
        type(e) is compat.GatherHashEncoding for e in encodings
    )  # field, 2 proposals, descriptors


def test_warp_loss_trains_the_encoder_from_the_first_step(model):
    """The warp loss needs no rendered depth: it is in the loss dict at step 0, before the descriptor loss."""
    torch.manual_seed(0)
    model.train()
    model.step = 0
    batch = {"group_images": torch.rand(2, 24, 32, 3), "rays_per_image": 4, "indices": torch.zeros(8, 3)}
    assert model.warp_loss_active(batch) and not model.descriptor_loss_active(batch)
    features, warped = model.encode_batch(batch["group_images"], warp=True)
    pairs, warped_features = warped
    assert features.shape[0] == 2 and warped_features.shape[0] == (model.config.warp_images_per_batch or 2)
    loss, stats = model.warp_loss(batch["group_images"], features, pairs, warped_features)
    assert torch.isfinite(loss) and 0.0 <= float(stats["dense_match_accuracy"]) <= 1.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.descriptor_field.parameters())


def test_the_warm_up_encodes_only_the_warped_images(model, monkeypatch):
    """Before the field's losses start only the warp loss needs features: the CNN sees the W warped images and
    their copies, not the whole batch (the other images' features would be thrown away)."""
    torch.manual_seed(0)
    model.train()
    monkeypatch.setattr(model.config, "warp_images_per_batch", 1)
    seen = []
    monkeypatch.setattr(
        model.encoder, "forward", lambda x, original=model.encoder.forward: seen.append(x.shape[0]) or original(x)
    )
    images = torch.rand(3, 24, 32, 3)
    features, (pairs, warped_features) = model.encode_batch(images, warp=True, every_image=False)
    assert seen == [2] and features.shape[0] == 1 and warped_features.shape[0] == 1
    features, _ = model.encode_batch(images, warp=True)
    assert seen == [2, 4] and features.shape[0] == 3


def test_which_steps_encode_every_image(model, monkeypatch):
    batch = {"group_images": torch.rand(2, 24, 32, 3), "rays_per_image": 4, "indices": torch.zeros(8, 3)}
    model.train()
    monkeypatch.setattr(model.config, "descriptor_loss_mult", 0.0)
    model.step = 0
    assert not model.features_for_every_image(batch)  # the warm-up: the warp loss only
    model.step = model.config.descriptor_loss_start_step
    assert model.features_for_every_image(batch)  # the distillation reads every image
    monkeypatch.setattr(model.config, "distill_warp_images_only", True)
    assert not model.features_for_every_image(batch)
    monkeypatch.setattr(model.config, "warp_loss_mult", 0.0)
    assert model.features_for_every_image(batch)  # no warped images to read
    monkeypatch.setattr(model.config, "descriptor_loss_mult", 1.0)
    monkeypatch.setattr(model.config, "warp_loss_mult", 1.0)
    assert model.features_for_every_image(batch)  # the rendered-descriptor loss has rays in every image


def _camera_bundle(width: int = 8, height: int = 6):
    from nerfstudio.cameras.cameras import Cameras

    c2w = torch.eye(4)[:3]
    c2w[2, 3] = 0.5
    camera = Cameras(
        camera_to_worlds=c2w[None], fx=8.0, fy=8.0, cx=width / 2, cy=height / 2, width=width, height=height
    )
    return camera.generate_rays(camera_indices=0, keep_shape=True)


def test_localization_renders_skip_viewer_outputs_and_the_field_unless_asked(model):
    model.eval()
    bundle = _camera_bundle()
    calls = []
    original = model.descriptor_field.forward
    model.descriptor_field.forward = lambda positions: calls.append(1) or original(positions)
    plain = model.render_for_localization(bundle, descriptors=False)
    assert {"rgb", "depth", "accumulation"} <= set(plain) and plain["rgb"].shape == (6, 8, 3)
    assert "descriptor" not in plain and "descriptor_pca" not in plain and not calls
    with_field = model.render_for_localization(bundle, descriptors=True)
    assert with_field["descriptor"].shape == (6, 8, 8) and calls and "descriptor_similarity" not in with_field
    assert torch.equal(plain["depth"], with_field["depth"])  # the same geometry either way
    viewer = model.get_outputs_for_camera_ray_bundle(bundle)  # the viewer's path keeps its outputs
    assert {"descriptor", "descriptor_pca", "descriptor_similarity"} <= set(viewer)
    assert model.descriptors_enabled


def test_distillation_trains_field_and_encoder_from_remembered_surface_points(model):
    """Training rays leave surface points; the distillation term reads them back and trains both networks."""
    torch.manual_seed(0)
    model.train()
    model.step = model.config.descriptor_loss_start_step
    rays_per_image, images = 40, 2
    yx = torch.stack([torch.randint(24, (images * rays_per_image,)), torch.randint(32, (images * rays_per_image,))], -1)
    image_ids = torch.tensor([2, 0]).repeat_interleave(rays_per_image)
    batch = {
        "group_images": torch.rand(images, 24, 32, 3),
        "rays_per_image": rays_per_image,
        "indices": torch.cat([image_ids[:, None], yx], dim=-1),
    }
    outputs = {
        "accumulation": torch.ones(images * rays_per_image, 1),
        "ray_points": torch.rand(images * rays_per_image, 3) * 2 - 1,
        "ray_footprint": torch.full((images * rays_per_image,), 0.01),
    }
    assert model.distill_loss(batch, torch.zeros(1)) is None  # nothing remembered yet
    model.remember_surface(outputs, batch)
    features = model.encode_batch(batch["group_images"], warp=False)[0]
    assert torch.isfinite(model.distill_loss(batch, features[:1])[0])  # the first image's points only
    loss, stats = model.distill_loss(batch, features)
    assert torch.isfinite(loss) and 0.0 <= float(stats["match_accuracy"]) <= 1.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.descriptor_field.parameters())


def test_window_batches_look_features_up_at_window_coordinates(model, monkeypatch):
    """With windows, both field losses read the window's features at the rays' pixels less the window's corner; the
    surface cache stays the size of the whole images."""
    import crossfire_ns.model as model_module

    looked_up = []
    real = model_module.sample_features

    def recording(features, pixels, image_size):
        looked_up.append((pixels.clone(), tuple(image_size)))
        return real(features, pixels, image_size)

    monkeypatch.setattr(model_module, "sample_features", recording)
    torch.manual_seed(0)
    model.train()
    model.step = model.config.descriptor_loss_start_step
    rays_per_image, images, (h, w) = 40, 2, (12, 16)
    windows = torch.tensor([[5, 9, h, w], [0, 3, h, w]])
    local = torch.stack([torch.randint(h, (images, rays_per_image)), torch.randint(w, (images, rays_per_image))], -1)
    yx = (local + windows[:, None, :2]).reshape(-1, 2)
    batch = {
        "group_images": torch.rand(images, h, w, 3),
        "group_windows": windows,
        "image_size": (24, 32),
        "rays_per_image": rays_per_image,
        "indices": torch.cat([torch.tensor([2, 0]).repeat_interleave(rays_per_image)[:, None], yx], dim=-1),
    }
    outputs = {
        "accumulation": torch.ones(images * rays_per_image, 1),
        "ray_points": torch.rand(images * rays_per_image, 3) * 2 - 1,
        "ray_footprint": torch.full((images * rays_per_image,), 0.01),
        "descriptor": F.normalize(torch.randn(images * rays_per_image, model.config.descriptor_dim), dim=-1),
    }
    model.remember_surface(outputs, batch)
    assert model.surface_cache.image_size == (24, 32)
    features = model.encode_batch(batch["group_images"], warp=False)[0]
    model.descriptor_loss(outputs, batch, features)
    assert torch.equal(looked_up[0][0], local.flip(-1).float() + 0.5) and looked_up[0][1] == (h, w)
    looked_up.clear()
    assert model.distill_loss(batch, features) is not None
    pixels, size = looked_up[0]
    assert size == (h, w) and pixels.min() >= 0 and (pixels[..., 0] < w).all() and (pixels[..., 1] < h).all()
    remembered = {tuple(p) for p in (local.flip(-1).float() + 0.5).reshape(images, -1, 2)[0].tolist()}
    assert {tuple(p) for p in pixels[0].tolist()} <= remembered
