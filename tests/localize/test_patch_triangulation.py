"""NCC triangulation of index points on exact synthetic geometry: a textured plane seen by three cameras."""

import cv2
import numpy as np
import torch

from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w
from crossfire_ns.localize.map_index import MapIndex, ViewCells
from crossfire_ns.localize.patch_alignment import local_contrast
from crossfire_ns.localize.patch_triangulation import patch_triangulated_points, training_greys
from tests.localize.test_patch_alignment import PLANE_Z, SIZE, K, _render

VIEWS = [
    (np.eye(3), np.zeros(3)),
    (cv2.Rodrigues(np.array([0.0, 0.05, 0.0]))[0], np.array([-0.3, 0.05, 0.0])),
    (cv2.Rodrigues(np.array([0.04, -0.03, 0.0]))[0], np.array([0.25, -0.2, 0.1])),
]


def _plane_index(bias):
    """An index of the plane whose view-0 points lie ``bias(pixels)`` (a share) beyond the plane along their rays."""
    pixels = np.stack(np.meshgrid(np.arange(12, 148, 4) + 0.5, np.arange(12, 108, 4) + 0.5), -1).reshape(-1, 2)
    cells, truth = [], []
    for v, (R, centre) in enumerate(VIEWS):
        rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ np.linalg.inv(K).T @ R
        points = centre + ((PLANE_Z - centre[2]) / rays[:, 2])[:, None] * rays
        truth.append(points)
        if v == 0:
            points = centre + (points - centre) * (1.0 + bias(pixels))[:, None]
        cells.append(
            ViewCells(torch.zeros(len(points), 4), torch.from_numpy(points).float(), torch.from_numpy(pixels).float())
        )
    c2ws = np.stack([opencv_w2c_to_opengl_c2w(R, -R @ c) for R, c in VIEWS])
    index = MapIndex(c2ws, np.repeat(K[None], 3, 0), np.tile(SIZE, (3, 1)), np.full(3, 4), cells)
    greys = []
    for R, c in VIEWS:
        grey = _render(R, -R @ c)
        greys.append((grey, local_contrast(grey, 4)))
    return index, greys, truth


def _distance_error(points, truth, centre):
    return np.abs(np.linalg.norm(points - centre, axis=1) / np.linalg.norm(truth - centre, axis=1) - 1.0)


def test_points_a_few_per_cent_off_along_their_rays_come_back_to_the_surface():
    index, greys, truth = _plane_index(lambda p: 0.03 * np.sin(p[:, 0] / 20.0) + 0.02)
    before = _distance_error(index.views[0].points.numpy(), truth[0], VIEWS[0][1])
    points, moved = patch_triangulated_points(index, greys, 4, 0.02, 0.8, 2, 2, 0.5, 2, 0.01)
    after = _distance_error(points[0].numpy(), truth[0], VIEWS[0][1])
    placed = ~np.isclose(points[0].numpy(), index.views[0].points.numpy()).all(axis=1)
    assert np.median(before) > 0.02
    assert placed.mean() > 0.7 and moved >= placed.sum()  # the rest lie where no neighbour sees their patch
    assert np.median(after[placed]) < 0.004 and np.percentile(after[placed], 90) < 0.01  # about 0.02 px of parallax
    for v in (1, 2):  # points already on the surface stay there
        assert np.median(_distance_error(points[v].numpy(), truth[v], VIEWS[v][1])) < 0.004


def test_cells_without_texture_or_a_second_view_stay_where_they_were():
    index, greys, _ = _plane_index(lambda p: np.full(len(p), 0.03))
    flat = [(g, torch.zeros_like(c)) for g, c in greys]  # no patch has contrast
    points, moved = patch_triangulated_points(index, flat, 4, 0.02, 0.8, 2, 2, 0.5, 2, 0.01)
    assert moved == 0 and all(torch.equal(p, v.points) for p, v in zip(points, index.views))
    points, moved = patch_triangulated_points(index, greys, 4, 0.02, 0.8, 2, 2, 0.5, 3, 0.01)  # needs 3 agreeing
    assert moved == 0


def test_training_greys_are_made_once_per_setting():
    class Map:
        def __init__(self):
            self.cache, self.calls = {}, 0

        def training_images(self):
            self.calls += 1
            return [torch.rand(12, 16, 3)]

        def cached(self, key, build):
            if key not in self.cache:
                self.cache[key] = build()
            return self.cache[key]

    crossfire_map = Map()
    first = training_greys(crossfire_map, 2, 1.0)
    assert training_greys(crossfire_map, 2, 1.0) is first and crossfire_map.calls == 1
    grey, contrast = first[0]
    assert grey.shape == contrast.shape == (12, 16)
    training_greys(crossfire_map, 2, 0.0)
    assert crossfire_map.calls == 2
