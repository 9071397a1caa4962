"""The map index: projection, depth edges, the neighbour depth check, triangulation, view choice, storage and reuse."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossfire_ns.geometry import project_c2w
from crossfire_ns.localize.map_index import (
    INDEX_FILE,
    MapIndex,
    MapIndexConfig,
    RawView,
    ViewCells,
    cell_size,
    confirmed_by_neighbours,
    depth_edges,
    fine_cells,
    move_along_rays,
    rescaled_distances,
    triangulated_distances,
)
from crossfire_ns.localize.virtual_views import VirtualViewsConfig
from crossfire_ns.synthetic.cameras import look_at

K = np.array([[50.0, 0, 20.0], [0, 50.0, 15.0], [0, 0, 1]])
W, H = 40, 30


def _plane_view(c2w: np.ndarray, wall_y: float, distance_error: float = 0.0) -> RawView:
    """A camera looking at the plane y = wall_y: each cell's exact distance (times 1 + distance_error) and point."""
    ys, xs = np.mgrid[0:H, 0:W] + 0.5
    cam = np.stack([(xs - K[0, 2]) / K[0, 0], -(ys - K[1, 2]) / K[1, 1], -np.ones_like(xs)], -1)  # OpenGL axes
    dirs = cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    t = (wall_y - c2w[1, 3]) / dirs[..., 1]
    distance = t * (1.0 + distance_error)
    points = c2w[:3, 3] + dirs * distance[..., None]
    return RawView(torch.zeros(4, H, W), distance, points, np.ones((H, W), bool), K, 1.0)


def test_project_puts_a_point_on_the_axis_at_the_principal_point():
    c2w = look_at([0, 0, 0], [0, 5, 0])
    pixels, distance, in_front = project_c2w(np.array([[0.0, 5.0, 0.0], [0.0, -5.0, 0.0]]), c2w, K)
    assert np.allclose(pixels[0], K[:2, 2]) and np.isclose(distance[0], 5.0)
    assert in_front.tolist() == [True, False]


def test_depth_edges_flag_both_sides_of_a_step_and_nothing_on_a_plane():
    flat = np.full((6, 8), 3.0)
    assert not depth_edges(flat, 0.05).any()
    step = flat.copy()
    step[:, 4:] = 6.0
    edges = depth_edges(step, 0.05)
    assert edges[:, 3].all() and edges[:, 4].all() and not edges[:, :3].any() and not edges[:, 5:].any()


def test_neighbour_check_confirms_true_depth_and_rejects_wrong_depth():
    a, b = look_at([0, 0, 0], [0, 5, 0]), look_at([0.3, 0, 0], [0.3, 5, 0])
    c2ws = np.stack([a, b])
    config = MapIndexConfig(consistency=0.03, num_neighbours=1)
    right = confirmed_by_neighbours([_plane_view(a, 5.0), _plane_view(b, 5.0)], c2ws, config)
    assert right[0].mean() > 0.8  # all but the cells that b does not see
    wrong = confirmed_by_neighbours([_plane_view(a, 5.0, distance_error=0.15), _plane_view(b, 5.0)], c2ws, config)
    assert wrong[0].mean() == 0.0  # 15% too far: b sees the wall in front of every point


def test_fine_cells_lie_on_the_surface_along_their_own_rays_and_keep_their_pixel_features():
    c2w = look_at([0, 0, 0], [1.0, 5, 0.5])  # oblique: distance varies across the wall
    cell = 2
    fine_view = _plane_view(c2w, 5.0)  # exact distance per training pixel (40 x 30)
    coarse_K = np.array([[K[0, 0] / cell, 0, K[0, 2] / cell], [0, K[1, 1] / cell, K[1, 2] / cell], [0, 0, 1]])
    ys, xs = np.mgrid[0 : H // cell, 0 : W // cell] + 0.5
    cam = np.stack(
        [(xs - coarse_K[0, 2]) / coarse_K[0, 0], -(ys - coarse_K[1, 2]) / coarse_K[1, 1], -np.ones_like(xs)], -1
    )
    dirs = cam @ c2w[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    distance = (5.0 - c2w[1, 3]) / dirs[..., 1]  # the coarse cells' exact distances
    features = torch.nn.functional.normalize(torch.randn(4, H, W), dim=0)
    view = RawView(torch.zeros(4, H // cell, W // cell), distance, None, None, coarse_K, float(cell), features)
    trusted = np.zeros((H // cell, W // cell), bool)
    trusted[3:10, 4:15] = True
    trusted[5, 8] = False  # a hole: its neighbours fall back to their own cell's distance
    cells = fine_cells(view, trusted, c2w)
    assert len(cells.points) == trusted.sum() * cell * cell
    px = cells.pixels.numpy() - 0.5
    x, y = px[:, 0].astype(int), px[:, 1].astype(int)
    assert (trusted[y // cell, x // cell]).all()
    exact = fine_view.points[y, x]
    error = np.linalg.norm(cells.points.numpy() - exact, axis=1) / np.linalg.norm(exact - c2w[:3, 3], axis=1)
    assert np.median(error) < 1e-3 and error.max() < 0.03  # on the wall; a hole's neighbours are the worst
    pixels, _, _ = project_c2w(cells.points.numpy().astype(np.float64), c2w, K)
    assert np.allclose(pixels, cells.pixels.numpy(), atol=1e-3)  # each point on its own pixel's ray
    assert torch.allclose(cells.descriptors, features[:, y, x].T, atol=2e-3)


def test_cell_size_grows_for_large_images():
    assert cell_size(160, 120, MapIndexConfig(cell_px=2, max_cells=6000)) == 2
    cell = cell_size(1600, 1200, MapIndexConfig(cell_px=2, max_cells=6000))
    assert (1600 // cell) * (1200 // cell) <= 6000 < (1600 // (cell - 1)) * (1200 // (cell - 1))


def _index(n: int = 5) -> MapIndex:
    c2ws = np.stack([look_at([np.cos(a) * 3, np.sin(a) * 3, 0], [0, 0, 0]) for a in np.linspace(0, 2, n)])
    views = [ViewCells(torch.randn(7, 8), torch.randn(7, 3), torch.rand(7, 2) * 40) for _ in range(n)]
    return MapIndex(
        c2ws, np.repeat(K[None], n, 0), np.tile([W, H], (n, 1)), np.full(n, 2), views, {"step": 3}, {"cells": 35}
    )


def test_nearest_views_start_with_the_view_itself():
    index = _index()
    for i in range(len(index)):
        assert index.nearest_views(index.c2ws[i], 2)[0] == i
    assert index.nearest_views(index.c2ws[0], 2) == [0, 1]


def test_overlapping_views_are_those_that_see_what_the_image_sees_not_the_nearest():
    """The query stands where view 1 stands, turned 60 degrees from it, looking where views 0 and 2 (farther back)
    look."""
    walls = {"north": ([0, 5, 0], 1), "east": ([5, 0, 0], 0)}

    def wall_cells(name: str) -> ViewCells:
        centre, axis = walls[name]
        grid = np.stack(np.meshgrid(np.linspace(-2, 2, 6), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
        points = np.repeat(np.asarray(centre, float)[None], len(grid), 0)
        points[:, 1 - axis] += grid[:, 0]
        points[:, 2] += grid[:, 1]
        return ViewCells(torch.zeros(len(points), 4), torch.from_numpy(points).float(), torch.zeros(len(points), 2))

    beside = look_at([0.3, 0, 0], [0.3 + 5 * np.sin(np.radians(60)), 5 * np.cos(np.radians(60)), 0])
    c2ws = np.stack([look_at([0.3, -1.2, 0], [0.3, 5, 0]), beside, look_at([0.3, -1.5, 0], [0.3, 5, 0])])
    views = [wall_cells("north"), wall_cells("east"), wall_cells("north")]
    index = MapIndex(c2ws, np.repeat(K[None], 3, 0), np.tile([W, H], (3, 1)), np.ones(3, int), views)
    query = look_at([0.3, 0, 0], [0.3, 5, 0])
    assert index.nearest_views(query, 1) == [1]
    assert index.overlapping_views(query, K, (W, H), 3) == [0, 2]  # view 1 sees nothing of it: left out


def test_covisible_views_are_the_nearest_of_those_that_see_the_same_side_of_what_the_image_sees():
    """A wall at y = 5 seen from the front by views 0 (far) and 3 (near), from behind by view 2, and not at all by
    view 1 (turned away); the query stands in front of it."""
    grid = np.stack(np.meshgrid(np.linspace(-2, 2, 6), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
    wall = np.stack([0.3 + grid[:, 0], np.full(len(grid), 5.0), grid[:, 1]], 1)
    east = np.stack([np.full(len(grid), 5.0), grid[:, 0], grid[:, 1]], 1)
    c2ws = np.stack([
        look_at([0.3, -1.5, 0], [0.3, 5, 0]), look_at([0.3, 0, 0], [5, 0.3, 0]), look_at([0.3, 10, 0], [0.3, 5, 0]),
        look_at([0.3, -0.5, 0], [0.3, 5, 0]),
    ])  # fmt: skip
    views = [
        ViewCells(torch.zeros(len(p), 4), torch.from_numpy(p).float(), torch.zeros(len(p), 2))
        for p in (wall, east, wall, wall)
    ]
    index = MapIndex(c2ws, np.repeat(K[None], 4, 0), np.tile([W, H], (4, 1)), np.ones(4, int), views)
    query = look_at([0.3, 0, 0], [0.3, 5, 0])
    assert 2 in index.overlapping_views(query, K, (W, H), 4)  # its cells land in the image, from behind
    assert index.overlapping_views(query, K, (W, H), 4, max_angle_deg=30.0) == [3, 0]  # equal counts: nearest first
    assert index.covisible_views(query, K, (W, H), 4, max_angle_deg=30.0, min_share=0.5) == [3, 0]
    assert index.covisible_views(query, K, (W, H), 1, max_angle_deg=30.0, min_share=0.5) == [3]


def test_index_round_trips_through_its_file(tmp_path):
    index = _index()
    index.views[0].patch_points = index.views[0].points + 0.01
    path = tmp_path / INDEX_FILE
    index.save(path)
    loaded = MapIndex.load(path)
    assert loaded.key == {"step": 3} and loaded.stats == {"cells": 35}
    assert np.allclose(loaded.c2ws, index.c2ws) and (loaded.cell_px == 2).all()
    for a, b in zip(loaded.views, index.views):
        assert torch.allclose(a.points, b.points)
        assert torch.allclose(a.descriptors, b.descriptors, atol=2e-3)  # stored as float16
    assert torch.equal(loaded.views[0].patch_points, index.views[0].patch_points)
    assert all(v.patch_points is None for v in loaded.views[1:])  # none placed: the patch rounds use ``points``
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.slow
def test_index_is_stored_beside_the_map_reused_and_rebuilt_when_settings_change(trained_map, capsys):
    from crossfire_ns.localize.map_index import index_path, load_or_build_index
    from crossfire_ns.map import load_map

    loaded = load_map(trained_map[0])
    path = index_path(loaded)
    path.unlink(missing_ok=True)
    # the 100-step map's views do not match one another (tiny_map_matcher); a few virtual views, to store them too
    config = MapIndexConfig(triangulate=False, virtual=VirtualViewsConfig(enabled=True, max_views=8))
    built = load_or_build_index(loaded, config)
    assert path.is_file() and built.stats["renders"] == built.training_views == len(loaded.train_dataset)
    assert sum(len(v.points) for v in built.views) > 0
    # virtual views follow the training views, each with its rendered colour and source view
    virtual = len(built) - built.training_views
    assert virtual == built.stats["virtual_views"] == len(built.virtual_rgb) == len(built.virtual_sources)
    assert 0 < built.stats["virtual_poses"] <= 8
    stamp = path.stat().st_mtime_ns
    again = load_or_build_index(loaded, config)
    assert path.stat().st_mtime_ns == stamp and again.key == built.key  # reused, not rebuilt
    for a, b in zip(again.views, built.views):  # what a later run loads is exactly what this one matched against
        assert torch.equal(a.descriptors, b.descriptors) and torch.equal(a.points, b.points)
        assert (a.patch_points is None) == (b.patch_points is None)
        assert a.patch_points is None or torch.equal(a.patch_points, b.patch_points)
    assert again.training_views == built.training_views and len(again.virtual_rgb) == len(built.virtual_rgb)
    assert "cells_patch_triangulated" in built.stats
    plain = load_or_build_index(loaded, MapIndexConfig(triangulate=False, consistency=0.1))
    assert len(plain) == plain.training_views and not plain.virtual_rgb and "virtual_views" not in plain.stats
    assert "rebuilding" in capsys.readouterr().out
    path.write_bytes(b"not an index")
    assert len(load_or_build_index(loaded, config)) == len(built)  # unreadable: rebuilt


def test_index_renders_with_fewer_proposal_samples_and_restores_them(trained_map):
    """The index's cheaper renders: half the proposal samples inside the block, training's counts after it (also
    after an error), and on the test map a different but sane depth where the render is opaque."""
    from crossfire_ns.localize.render import MapRenderer, proposal_samples_scaled
    from crossfire_ns.map import load_map

    loaded = load_map(trained_map[0])
    sampler = loaded.model.proposal_sampler
    counts = tuple(sampler.num_proposal_samples_per_ray)
    with pytest.raises(RuntimeError):
        with proposal_samples_scaled(loaded.model, 0.5):
            assert sampler.num_proposal_samples_per_ray == tuple(max(1, round(n / 2)) for n in counts)
            raise RuntimeError("inside")
    assert tuple(sampler.num_proposal_samples_per_ray) == counts
    K = loaded.training_intrinsics(40, 30)
    full = MapRenderer(loaded.model).render(loaded.train_c2w[0], K, 40, 30)
    half = MapRenderer(loaded.model, proposal_share=0.5).render(loaded.train_c2w[0], K, 40, 30)
    assert tuple(sampler.num_proposal_samples_per_ray) == counts
    opaque = (full.accumulation[..., 0] > 0.9) & (half.accumulation[..., 0] > 0.9)
    assert opaque.sum() > 0
    relative = ((half.depth - full.depth).abs() / full.depth)[..., 0][opaque]
    # the render did change, and stayed sane; on real maps the poses are the same (BENCHMARKS.md, session 7).
    # The 100-step test map's proposal networks are barely trained: its median moved between 1% and 11% with
    # the training's random stream, so only a gross breakage is asserted here.
    assert float(relative.max()) > 0 and float(relative.median()) < 0.25


def test_renders_without_colour_keep_depth_and_opacity_and_restore_the_head(trained_map):
    """The index renders skip nerfacto's colour MLP: depth, expected depth and opacity are exactly those of the
    full render, rgb is black, and the colour head is back after the block (also after an error)."""
    from crossfire_ns.localize.render import MapRenderer, colour_skipped
    from crossfire_ns.map import load_map

    loaded = load_map(trained_map[0])
    head = loaded.model.field.mlp_head
    with pytest.raises(RuntimeError):
        with colour_skipped(loaded.model):
            assert loaded.model.field.mlp_head is not head
            raise RuntimeError("inside")
    assert loaded.model.field.mlp_head is head
    K = loaded.training_intrinsics(40, 30)
    full = MapRenderer(loaded.model).render(loaded.train_c2w[0], K, 40, 30)
    dark = MapRenderer(loaded.model, colour=False).render(loaded.train_c2w[0], K, 40, 30)
    assert loaded.model.field.mlp_head is head
    for name in ("depth", "expected_depth", "accumulation"):
        assert torch.equal(getattr(full, name), getattr(dark, name)), name
    assert float(dark.rgb.abs().max()) == 0.0 and float(full.rgb.max()) > 0.0


def _textured_plane_view(c2w: np.ndarray, seed_error: float, width=80, height=60, f=100.0, cell=2) -> RawView:
    """A camera looking at the wall y = 4 whose texture is a fixed function of the wall's (x, z): its per-pixel
    features, the cells' pooled features, and cells lifted with a distance ``seed_error`` too far."""
    full_K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]])
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    cam = np.stack([(xs - full_K[0, 2]) / f, -(ys - full_K[1, 2]) / f, -np.ones_like(xs)], -1)  # OpenGL axes
    dirs = cam @ c2w[:3, :3].T
    hit = c2w[:3, 3] + dirs * ((4.0 - c2w[1, 3]) / dirs[..., 1])[..., None]
    rng = np.random.default_rng(0)  # the same texture in every view
    frequencies = rng.normal(size=(16, 2)) * 12.0
    phases = rng.uniform(0, 2 * np.pi, 16)
    texture = np.sin(hit[..., [0, 2]] @ frequencies.T + phases)  # (H, W, 16)
    features = torch.nn.functional.normalize(torch.from_numpy(texture).float().permute(2, 0, 1), dim=0)
    pooled = torch.nn.functional.normalize(torch.nn.functional.avg_pool2d(features[None], cell)[0], dim=0)
    h, w = height // cell, width // cell
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    cam = np.stack([(cx * cell - full_K[0, 2]) / f, -(cy * cell - full_K[1, 2]) / f, -np.ones_like(cx)], -1)
    rays = cam @ c2w[:3, :3].T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    distance = (4.0 - c2w[1, 3]) / rays[..., 1] * (1.0 + seed_error)
    points = c2w[:3, 3] + rays * distance[..., None]
    K = np.array([[f / cell, 0, width / 2 / cell], [0, f / cell, height / 2 / cell], [0, 0, 1]])
    return RawView(pooled, distance, points, np.ones((h, w), bool), K, float(cell), features.half())


def test_triangulation_removes_a_rendered_depth_bias_and_keeps_each_cell_on_its_ray():
    c2ws = np.stack([look_at([x, 0, z], [x, 4, z]) for x, z in ((0, 0), (1.0, 0), (-1.0, 0.3), (0.2, -0.8))])
    views = [_textured_plane_view(c2w, seed_error=0.08) for c2w in c2ws]
    truth = _textured_plane_view(c2ws[0], seed_error=0.0).distance
    distances = triangulated_distances(views, c2ws, MapIndexConfig())
    found = np.isfinite(distances[0])
    assert found.mean() > 0.3  # the cells three other views see
    error = np.abs(distances[0][found] - truth[found]) / truth[found]
    assert np.median(error) < 0.01 and np.percentile(error, 90) < 0.03  # seeded 8% too far
    view = views[0]
    move_along_rays(view, distances[0], c2ws[0])
    pixels, distance, _ = project_c2w(view.points[found], c2ws[0], view.K)
    ys, xs = np.nonzero(found)
    assert np.allclose(pixels, np.stack([xs, ys], 1) + 0.5, atol=1e-6)  # still on its own cell's ray
    assert np.allclose(distance, distances[0][found])


def test_triangulation_keeps_nothing_without_texture_to_match():
    c2ws = np.stack([look_at([x, 0, 0], [x, 4, 0]) for x in (0.0, 1.0, -1.0)])
    views = [_textured_plane_view(c2w, seed_error=0.0) for c2w in c2ws]
    for view in views:  # one colour everywhere: every window is a tie, no distinct peak
        view.pixel_descriptors = torch.nn.functional.normalize(torch.ones_like(view.pixel_descriptors.float()), dim=0)
        view.descriptors = torch.nn.functional.normalize(torch.ones_like(view.descriptors), dim=0)
    assert not any(np.isfinite(d).any() for d in triangulated_distances(views, c2ws, MapIndexConfig()))


def test_cells_that_do_not_triangulate_take_the_rendered_depth_rescaled_by_their_triangulated_neighbours():
    ys, xs = np.mgrid[0:20, 0:30]
    truth = 3.0 + 0.05 * xs  # a wall receding to the right
    rendered = truth * (0.9 + 0.002 * xs)  # smoothly short, 10% on the left, 4% on the right
    triangulated = np.where((xs % 4 == 0) & (ys % 4 == 0), truth, np.nan)  # a sparse grid of cells triangulated
    candidates = np.ones_like(truth, bool)
    candidates[:, 28:] = False  # these failed the neighbour check: never lifted
    rescaled = rescaled_distances(rendered, triangulated, candidates, radius=4)
    filled = np.isfinite(rescaled)
    assert not filled[np.isfinite(triangulated)].any() and not filled[:, 28:].any()
    assert (filled | np.isfinite(triangulated))[:, :28].all()  # every candidate is within 4 cells of a triangulated one
    error = np.abs(rescaled[filled] - truth[filled]) / truth[filled]
    assert error.max() < 0.01  # from 4-10% short
    far = rescaled_distances(rendered, np.where((xs == 0) & (ys == 0), truth, np.nan), candidates, radius=3)
    assert np.isfinite(far).sum() == np.sum(np.hypot(xs, ys)[candidates] < 3) - 1  # only near the one known cell


def _stub_map(tmp_path, c2ws: np.ndarray, weights: bytes = b"weights" * 100):
    """What ``load_or_build_index`` reads of a map: its config.yml's folder, checkpoint, step, views and their poses."""
    checkpoint = tmp_path / "nerfstudio_models" / "step-000000003.ckpt"
    checkpoint.parent.mkdir(exist_ok=True)
    checkpoint.write_bytes(weights)
    return SimpleNamespace(
        config_path=tmp_path / "config.yml", checkpoint=checkpoint, step=3, train_dataset=[None] * len(c2ws),
        train_c2w=c2ws, has_distortion=lambda: False,
    )  # fmt: skip


def test_the_index_key_is_the_checkpoints_content_not_its_name_or_size(tmp_path):
    from crossfire_ns.localize.map_index import index_key

    stub = _stub_map(tmp_path, _index().c2ws, b"A" * 64)
    key = index_key(stub, MapIndexConfig())
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(stub.checkpoint.read_bytes())
    assert index_key(SimpleNamespace(**{**vars(stub), "checkpoint": copy}), MapIndexConfig()) == key
    replacement = tmp_path / "replacement"
    replacement.write_bytes(b"B" * 64)  # retrained in place: the same name and size, other weights
    os.replace(replacement, stub.checkpoint)
    assert index_key(stub, MapIndexConfig())["checkpoint_sha256"] != key["checkpoint_sha256"]
    distorted = index_key(SimpleNamespace(**{**vars(stub), "has_distortion": lambda: True}), MapIndexConfig())
    assert distorted != index_key(stub, MapIndexConfig())  # indices built from distorted images are not reused


@pytest.mark.parametrize("change", ["fewer views", "moved view"])
def test_a_stored_index_that_does_not_match_the_maps_views_is_rebuilt(tmp_path, monkeypatch, change, capsys):
    from crossfire_ns.localize import map_index as module
    from crossfire_ns.localize.map_index import index_key, index_path, load_or_build_index

    stored = _index(5)
    c2ws = stored.c2ws.copy()
    if change == "fewer views":
        c2ws = c2ws[:4]
    else:
        c2ws[2, :3, 3] += 0.01
    stub = _stub_map(tmp_path, c2ws)
    config = MapIndexConfig()
    stored.key = index_key(stub, config, None)
    stored.save(index_path(stub))
    rebuilt = _index(len(c2ws))
    rebuilt.stats = {"cells": 1, "cells_basic": 1, "cells_kept": 1, "seconds": 0.0}
    calls = []

    def build(crossfire_map, config, key, patch) -> MapIndex:
        calls.append(key)
        rebuilt.key = key
        return rebuilt

    monkeypatch.setattr(module, "build_map_index", build)
    assert load_or_build_index(stub, config) is rebuilt and len(calls) == 1
    assert "rebuilding" in capsys.readouterr().out

    stub.train_c2w = rebuilt.c2ws  # the stored index is now the rebuilt one, matching the map: reused
    loaded = load_or_build_index(stub, config)
    assert len(calls) == 1 and np.array_equal(loaded.c2ws, rebuilt.c2ws)


@pytest.mark.parametrize("choice", ["nearest", "overlap", "covisible"])
def test_refinement_can_keep_to_the_training_views(choice):
    """With virtual views in the index, ``refine.virtual_views False`` leaves them to retrieval and the coarse stage."""
    from dataclasses import replace

    from crossfire_ns.localize.refine import RefineConfig, refinement_views

    index = replace(_index(6), num_training=3)  # views 3-5 stand for virtual ones
    config = RefineConfig(views=4, view_choice=choice, covisible_share=0.0)
    c2w = index.c2ws[4]
    every = refinement_views(index, c2w, K, (H, W), config)
    kept = refinement_views(index, c2w, K, (H, W), replace(config, virtual_views=False))
    assert any(v >= 3 for v in every) and kept and all(v < 3 for v in kept)
    assert kept == [v for v in refinement_views(index, c2w, K, (H, W), replace(config, views=6)) if v < 3][:4]
