"""NCC patch alignment on exact synthetic geometry: a textured plane seen by two cameras."""

import cv2
import numpy as np
import torch

from crossfire_ns.geometry import project_points as _project
from crossfire_ns.localize.patch_alignment import align_patches, local_contrast, warped_templates


def project_points(points, K, R, t):
    return _project(points, K, R, t)[0]


K = np.array([[120.0, 0.0, 80.0], [0.0, 120.0, 60.0], [0.0, 0.0, 1.0]])
SIZE = (160, 120)
PLANE_Z = 4.0


def _texture(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth (band-limited) grey texture on the plane z = PLANE_Z."""
    rng = np.random.default_rng(3)
    value = np.full_like(x, 0.5)
    for _ in range(12):
        fx, fy = rng.uniform(-30, 30, 2)
        value += 0.04 * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
    return value


def _render(R: np.ndarray, t: np.ndarray, gain: float = 1.0, offset: float = 0.0) -> torch.Tensor:
    """The plane seen by the OpenCV camera (R, t), pixel centres at +0.5."""
    u, v = np.meshgrid(np.arange(SIZE[0]) + 0.5, np.arange(SIZE[1]) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T @ R  # world directions
    origin = -R.T @ t
    depth = (PLANE_Z - origin[2]) / rays[..., 2]
    hit = origin + depth[..., None] * rays
    return torch.from_numpy(gain * _texture(hit[..., 0], hit[..., 1]) + offset).float()


def _two_views():
    R_view, t_view = np.eye(3), np.zeros(3)
    R_query = cv2.Rodrigues(np.array([0.03, -0.08, 0.02]))[0]
    t_query = -R_query @ np.array([0.35, -0.1, 0.2])
    pixels = np.stack(np.meshgrid(np.arange(20, 140, 9) + 0.5, np.arange(20, 100, 9) + 0.5), -1).reshape(-1, 2)
    points = np.concatenate([(pixels - K[:2, 2]) / K[0, 0] * PLANE_Z, np.full((len(pixels), 1), PLANE_Z)], axis=1)
    return (R_view, t_view), (R_query, t_query), pixels, points


def test_templates_at_the_true_pose_are_what_the_query_sees():
    (R_v, t_v), (R_q, t_q), _, points = _two_views()
    centres = project_points(points, K, R_q, t_q)
    offsets = np.stack(np.meshgrid(np.arange(-4, 5), np.arange(-4, 5)), -1).reshape(-1, 2).astype(float)
    pixels = centres[:, None] + offsets[None]
    templates = warped_templates(_render(R_v, t_v), K, R_v, t_v, points, K, R_q, t_q, pixels)
    seen = ~torch.isnan(templates).any(-1)
    assert seen.sum() > 40
    origin = -R_q.T @ t_q
    for n in np.flatnonzero(seen.numpy())[:10]:
        rays = np.concatenate([pixels[n], np.ones((len(offsets), 1))], axis=1) @ np.linalg.inv(K).T @ R_q
        hit = origin + ((PLANE_Z - origin[2]) / rays[:, 2])[:, None] * rays
        truth = _texture(hit[:, 0], hit[:, 1])
        error = templates[n].numpy() - truth
        assert np.abs(error).max() < 0.35 * truth.std()  # sampled from the view's pixels: interpolation error only
        assert np.corrcoef(templates[n].numpy(), truth)[0, 1] > 0.97


def test_patches_are_found_where_they_are_from_a_pose_a_pixel_off_under_other_lighting():
    (R_v, t_v), (R_q, t_q), _, points = _two_views()
    query = _render(R_q, t_q, gain=0.4, offset=0.1)  # darker, lifted: NCC does not care
    truth = project_points(points, K, R_q, t_q)
    R_off = cv2.Rodrigues(np.array([0.0, 0.006, 0.0]))[0] @ R_q  # the search starts from a pose slightly off
    predicted = project_points(points, K, R_off, t_q)
    xy, score, ok = align_patches(query, _render(R_v, t_v), K, R_v, t_v, points, K, R_off, t_q, 4, 3)
    assert ok.sum() > 40
    assert float(np.abs(predicted[ok.numpy()] - truth[ok.numpy()]).max()) > 0.5  # the prediction is off
    error = xy[ok.numpy()] - truth[ok.numpy()]
    assert np.median(np.linalg.norm(error, axis=1)) < 0.1
    assert np.abs(np.median(error, axis=0)).max() < 0.02  # no common shift
    assert float(score[ok].median()) > 0.97
    # one search step alone leaves the parabola's pull towards whole pixels
    first, _, ok_first = align_patches(query, _render(R_v, t_v), K, R_v, t_v, points, K, R_off, t_q, 4, 3, 0)
    both = (ok & ok_first).numpy()
    assert np.abs(np.median(first[both] - truth[both], axis=0)).max() > np.abs(np.median(error, axis=0)).max()


def test_flat_regions_have_no_contrast():
    grey = torch.full((20, 30), 0.3)
    grey[:, 15:] += torch.linspace(0, 0.3, 15)
    contrast = local_contrast(grey, 2)
    assert contrast[10, 5] < 1e-6 < 0.02 < contrast[10, 22]


class _PlaneMap:
    """What the matcher's patch rounds read of a map: training images and a cache."""

    def __init__(self, images):
        self.images, self.cache = images, {}

    def training_images(self):
        return self.images

    def cached(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


def _plane_map_and_index():
    from crossfire_ns.geometry import opencv_w2c_to_opengl_c2w
    from crossfire_ns.localize.map_index import MapIndex, ViewCells

    (R_v, t_v), (R_q, t_q), _, _ = _two_views()
    R_w = cv2.Rodrigues(np.array([0.0, 0.05, 0.0]))[0]
    views = [(R_v, t_v), (R_w, -R_w @ np.array([-0.2, 0.05, 0.0]))]
    pixels = np.stack(np.meshgrid(np.arange(8, 152, 2) + 0.5, np.arange(8, 112, 2) + 0.5), -1).reshape(-1, 2)
    cells, images = [], []
    for R, t in views:
        rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ np.linalg.inv(K).T @ R
        origin = -R.T @ t
        points = origin + ((PLANE_Z - origin[2]) / rays[:, 2])[:, None] * rays
        cells.append(
            ViewCells(torch.zeros(len(points), 4), torch.from_numpy(points).float(), torch.from_numpy(pixels).float())
        )
        images.append(_render(R, t)[..., None].expand(-1, -1, 3).clamp(0, 1))
    c2ws = np.stack([opencv_w2c_to_opengl_c2w(R, t) for R, t in views])
    index = MapIndex(c2ws, np.repeat(K[None], 2, 0), np.tile(SIZE, (2, 1)), np.full(2, 2), cells)
    return _PlaneMap(images), index, opencv_w2c_to_opengl_c2w(R_q, t_q), (R_q, t_q)


def _patch_round(plane_map, index, image: np.ndarray, pose, search: int):
    """``patch_rounds.patch_round`` of ``image`` at ``pose`` on the plane's two views, without smoothing."""
    from crossfire_ns.localize.patch_alignment import PatchConfig
    from crossfire_ns.localize.patch_rounds import patch_round
    from crossfire_ns.localize.pnp import PoseSolver
    from crossfire_ns.localize.query_features import QueryFeatures
    from crossfire_ns.localize.refine import RefineConfig

    query = QueryFeatures(image, torch.zeros(1, *image.shape[:2]), torch.zeros(0, 1), torch.zeros(0, 2))
    config, views = PatchConfig(smoothing_px=0.0), RefineConfig(views=2)
    return patch_round(plane_map, index, query, K, pose, search, config, views, PoseSolver())


def test_patch_rounds_take_a_pose_a_quarter_of_a_degree_off_to_the_truth():
    from crossfire_ns.geometry import c2w_pose_errors, opencv_w2c_to_opengl_c2w

    plane_map, index, truth, (R_q, t_q) = _plane_map_and_index()
    query = (_render(R_q, t_q, gain=0.6, offset=0.05).clamp(0, 1) * 255).round().byte()
    query = query[..., None].expand(-1, -1, 3).numpy()
    start = opencv_w2c_to_opengl_c2w(cv2.Rodrigues(np.array([0.004, -0.003, 0.0]))[0] @ R_q, t_q)
    assert c2w_pose_errors(start, truth)[1] > 0.25
    pose = start
    for search in (3, 1):  # two rounds: a wide search, then a narrow one
        found = _patch_round(plane_map, index, query, pose, search)
        assert found.pnp.success and found.num_matches > 0.5 * found.num_searched > 100
        pose = opencv_w2c_to_opengl_c2w(found.pnp.R, found.pnp.t)
    translation, rotation = c2w_pose_errors(pose, truth)
    assert rotation < 0.04 and translation < 0.01  # uint8 grey levels on one plane: about 0.02 deg


def test_a_query_that_does_not_look_like_the_map_finds_few_patches():
    plane_map, index, truth, _ = _plane_map_and_index()
    noise = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    found = _patch_round(plane_map, index, noise, truth, search=2)
    assert found.num_searched > 100 and found.num_matches < 0.1 * found.num_searched
