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


def test_window_keeps_the_aspect_within_the_pixel_budget_and_small_images_whole():
    from crossfire_ns.datamanager import window_size

    assert window_size(120, 160, 1 << 16) == (120, 160)  # fits: the whole image
    assert window_size(480, 640, 0) == (480, 640)  # 0: whole images
    h, w = window_size(480, 640, 1 << 16)
    assert h * w <= 1 << 16 and abs(w / h - 640 / 480) < 0.01 and h * w > 0.98 * (1 << 16)


def test_whole_image_windows_draw_no_random_numbers():
    """Images within the budget train exactly as before the option: the generator's stream is untouched."""
    from crossfire_ns.datamanager import random_windows

    gen = torch.Generator().manual_seed(3)
    windows = random_windows(4, 20, 30, (20, 30), generator=gen)
    assert windows.tolist() == [[0, 0, 20, 30]] * 4
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(3).get_state())


def test_rays_stay_inside_each_images_window():
    from crossfire_ns.datamanager import random_windows

    gen = torch.Generator().manual_seed(2)
    windows = random_windows(3, 40, 50, (10, 12), generator=gen)
    idx = sample_grouped_pixels(5, 40, 50, 3, 64, generator=gen, patch_size=4, patch_dilation=2, patch_fraction=0.5,
                                windows=windows)  # fmt: skip
    for rows, (y0, x0, h, w) in zip(idx.view(3, 64, 3), windows.tolist()):
        assert ((rows[:, 1] >= y0) & (rows[:, 1] < y0 + h) & (rows[:, 2] >= x0) & (rows[:, 2] < x0 + w)).all()
    assert len({tuple(window[:2]) for window in windows.tolist()}) > 1, "windows are placed at random"


def test_windows_and_masks_do_not_combine():
    from crossfire_ns.datamanager import random_windows

    mask = torch.ones(3, 8, 8, 1, dtype=torch.bool)
    try:
        sample_grouped_pixels(3, 8, 8, 2, 4, mask=mask, windows=random_windows(2, 8, 8, (4, 4)))
    except ValueError as err:
        assert "max_window_pixels 0" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_training_batches_carry_each_images_window(bundled_scene):
    """Above the budget, the CNN's images are the windows the rays came from, and the rays' colours are theirs."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from crossfire_ns.datamanager import CrossfireDataManagerConfig, window_size

    config = CrossfireDataManagerConfig(
        data=bundled_scene,
        dataparser=NerfstudioDataParserConfig(data=bundled_scene),
        scene_bounds="dataparser",
        train_num_rays_per_batch=64,
        pixel_sampler=ImageGroupedPixelSamplerConfig(images_per_batch=4, max_window_pixels=1200),
    )
    manager = config.setup(device="cpu")
    _, batch = manager.next_train(0)
    height, width = batch["image_size"]
    h, w = window_size(height, width, 1200)
    assert (h, w) != (height, width) and batch["group_images"].shape == (4, h, w, 3)
    rays = batch["indices"].view(4, 16, 3)
    for image, rays_of, window, rgb in zip(
        batch["group_images"], rays, batch["group_windows"], batch["image"].view(4, 16, 3)
    ):
        y0, x0 = window[:2].tolist()
        local_y, local_x = rays_of[:, 1] - y0, rays_of[:, 2] - x0
        assert ((local_y >= 0) & (local_y < h) & (local_x >= 0) & (local_x < w)).all()
        assert torch.equal(image[local_y, local_x], rgb)
