"""Ray batches grouped by image."""

import torch

from crossfire_ns.datamanager import ImageGroupedPixelSamplerConfig, sample_grouped_pixels


def test_rows_are_grouped_by_distinct_images():
    gen = torch.Generator().manual_seed(0)
    idx = sample_grouped_pixels(10, 20, 30, images_per_batch=4, rays_per_image=16, generator=gen)
    assert idx.shape == (64, 3)
    groups = idx[:, 0].view(4, 16)
    assert (groups == groups[:, :1]).all(), "each block of 16 rows must come from one image"
    assert len(set(groups[:, 0].tolist())) == 4, "the 4 groups must be distinct images"
    assert idx[:, 1].max() < 20 and idx[:, 2].max() < 30 and idx.min() >= 0


def test_mask_is_respected():
    mask = torch.zeros(3, 8, 8, 1, dtype=torch.bool)
    mask[:, 2:4, 5:7] = True
    idx = sample_grouped_pixels(3, 8, 8, images_per_batch=2, rays_per_image=50, mask=mask)
    assert ((idx[:, 1] >= 2) & (idx[:, 1] < 4) & (idx[:, 2] >= 5) & (idx[:, 2] < 7)).all()


def test_pixel_sampler_maps_to_absolute_camera_indices():
    sampler = ImageGroupedPixelSamplerConfig(images_per_batch=2).setup(num_rays_per_batch=8)
    images = torch.rand(3, 5, 6, 3)
    batch = sampler.sample({"image": images, "image_idx": torch.tensor([7, 11, 13])})
    cams = batch["indices"][:, 0].view(2, 4)
    assert set(cams[:, 0].tolist()) <= {7, 11, 13}
    assert (cams == cams[:, :1]).all()
    # The gathered colours are those of the sampled pixels in the right image.
    local = {7: 0, 11: 1, 13: 2}
    for (cam, y, x), rgb in zip(batch["indices"].tolist(), batch["image"]):
        assert torch.equal(rgb, images[local[cam], y, x])


def test_rays_not_divisible_by_groups_is_a_clear_error():
    sampler = ImageGroupedPixelSamplerConfig(images_per_batch=3).setup(num_rays_per_batch=8)
    try:
        sampler.sample({"image": torch.rand(4, 5, 6, 3), "image_idx": torch.arange(4)})
    except ValueError as err:
        assert "multiple" in str(err) and "train-num-rays-per-batch" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_patches_are_contiguous_dilated_squares():
    gen = torch.Generator().manual_seed(1)
    idx = sample_grouped_pixels(5, 40, 50, 2, 64, generator=gen, patch_size=4, patch_dilation=2, patch_fraction=0.5)
    assert idx.shape == (128, 3)
    first_image = idx[:64]
    patches = first_image[32:].view(2, 16, 3)  # the last half of each image's rays: 2 patches of 4x4
    for patch in patches:
        ys, xs = patch[:, 1].view(4, 4), patch[:, 2].view(4, 4)
        assert (ys[1:] - ys[:-1] == 2).all() and (xs[:, 1:] - xs[:, :-1] == 2).all()
        assert ys.max() < 40 and xs.max() < 50


def test_image_loaders_use_no_more_workers_than_cores(bundled_scene, recwarn):
    """Sized to the machine: nerfstudio's fixed 4 workers per process are capped at the usable cores, so torch does
    not warn that the loader would create more workers than the machine suggests."""
    import os
    import warnings

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from crossfire_ns.datamanager import CrossfireDataManagerConfig, loader_workers

    cores = len(os.sched_getaffinity(0))
    assert loader_workers(1) == min(4, cores) and loader_workers(8) == min(32, cores)
    warnings.simplefilter("always")
    config = CrossfireDataManagerConfig(
        data=bundled_scene, dataparser=NerfstudioDataParserConfig(data=bundled_scene), scene_bounds="dataparser"
    )
    manager = config.setup(device="cpu")
    assert manager.train_image_dataloader.num_workers == loader_workers(1)
    assert manager.eval_image_dataloader.num_workers == loader_workers(1)
    assert not [w for w in recwarn.list if "worker processes in total" in str(w.message)]
