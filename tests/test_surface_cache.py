"""The surface cache remembers training rays' surface points per feature cell and hands back fresh ones."""

import torch

from crossfire_ns.surface_cache import SurfaceCache


def _rays(image: int, yx, points):
    indices = torch.tensor([[image, y, x] for y, x in yx])
    return indices, torch.tensor(points, dtype=torch.float32)


def test_written_rays_come_back_with_their_pixels_and_points():
    cache = SurfaceCache(num_images=2, image_size=(6, 8), cell_px=2, device=torch.device("cpu"))
    indices, points = _rays(1, [(0, 0), (3, 5), (5, 7)], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    cache.write(indices, points, torch.tensor([0.1, 0.2, 0.3]), torch.ones(3, dtype=torch.bool), step=10)
    pixels, got, footprints = cache.sample(torch.tensor([1]), count=10, step=10, max_age=5)
    assert got.shape == (1, 3, 3)
    order = torch.argsort(footprints[0])
    assert torch.allclose(got[0, order], points)
    assert torch.allclose(pixels[0, order], torch.tensor([[0.5, 0.5], [5.5, 3.5], [7.5, 5.5]]))  # (x, y) + 0.5


def test_rays_not_kept_are_not_written_and_old_entries_expire():
    cache = SurfaceCache(num_images=1, image_size=(4, 4), cell_px=2, device=torch.device("cpu"))
    indices, points = _rays(0, [(0, 0), (2, 2)], [[1, 1, 1], [2, 2, 2]])
    cache.write(indices, points, torch.ones(2), torch.tensor([True, False]), step=0)
    assert cache.sample(torch.tensor([0]), 10, step=0, max_age=100)[1].shape[1] == 1
    assert cache.sample(torch.tensor([0]), 10, step=101, max_age=100)[1].shape[1] == 0


def test_a_later_ray_in_the_same_cell_replaces_the_earlier_one():
    cache = SurfaceCache(num_images=1, image_size=(4, 4), cell_px=2, device=torch.device("cpu"))
    cache.write(*_rays(0, [(0, 0)], [[1, 1, 1]]), torch.ones(1), torch.ones(1, dtype=torch.bool), step=0)
    cache.write(*_rays(0, [(1, 1)], [[5, 5, 5]]), torch.ones(1), torch.ones(1, dtype=torch.bool), step=1)
    pixels, points, _ = cache.sample(torch.tensor([0]), 10, step=1, max_age=10)
    assert points.shape[1] == 1 and torch.equal(points[0, 0], torch.tensor([5.0, 5.0, 5.0]))
    assert torch.equal(pixels[0, 0], torch.tensor([1.5, 1.5]))


def test_every_image_gets_the_same_number_of_points():
    cache = SurfaceCache(num_images=2, image_size=(8, 8), cell_px=2, device=torch.device("cpu"))
    yx0 = [(y, x) for y in range(0, 8, 2) for x in range(0, 8, 2)]  # 16 cells of image 0
    cache.write(*_rays(0, yx0, [[0, 0, 0]] * 16), torch.ones(16), torch.ones(16, dtype=torch.bool), step=0)
    cache.write(*_rays(1, yx0[:5], [[0, 0, 0]] * 5), torch.ones(5), torch.ones(5, dtype=torch.bool), step=0)
    pixels, _, _ = cache.sample(torch.tensor([0, 1]), 12, step=0, max_age=10)
    assert pixels.shape == (2, 5, 2)
    assert len({tuple(p) for p in pixels[0].tolist()}) == 5  # distinct cells, no repeats


def test_windows_keep_points_whose_pixels_they_hold():
    cache = SurfaceCache(num_images=1, image_size=(8, 8), cell_px=2, device=torch.device("cpu"))
    yx = [(y, x) for y in range(0, 8, 2) for x in range(0, 8, 2)]
    cache.write(*_rays(0, yx, [[0, 0, 0]] * 16), torch.ones(16), torch.ones(16, dtype=torch.bool), step=0)
    pixels, _, _ = cache.sample(torch.tensor([0]), 16, step=0, max_age=10, windows=torch.tensor([[2, 4, 4, 4]]))
    assert sorted(map(tuple, pixels[0].tolist())) == [(4.5, 2.5), (4.5, 4.5), (6.5, 2.5), (6.5, 4.5)]  # (x, y)
