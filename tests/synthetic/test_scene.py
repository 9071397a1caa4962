"""Tests of the bundled synthetic scene: layout, exact intrinsics and poses, determinism, lighting, texture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossfire_ns.synthetic import (
    QUERY_LIGHTING,
    TRAIN_LIGHTING,
    PinholeIntrinsics,
    Scene,
    SyntheticSceneConfig,
    build_scene,
    generate_scene,
    look_at,
    render_view,
)

SMALL = SyntheticSceneConfig(width=48, height=36, num_train=4, num_query=2, seed=5)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory) -> Path:
    return generate_scene(tmp_path_factory.mktemp("synthetic"), SMALL)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _intrinsics(meta: dict) -> PinholeIntrinsics:
    return PinholeIntrinsics(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["w"], meta["h"])


def _backproject(u: np.ndarray, v: np.ndarray, depth: np.ndarray, meta: dict, c2w_gl: np.ndarray) -> np.ndarray:
    """World points of pixels (integer u, v) at z-depth, written independently of the module under test."""
    x = (u + 0.5 - meta["cx"]) / meta["fl_x"] * depth
    y = (v + 0.5 - meta["cy"]) / meta["fl_y"] * depth
    cam_cv = np.stack([x, y, depth], axis=-1)
    cam_gl = cam_cv * np.array([1.0, -1.0, -1.0])
    return cam_gl @ c2w_gl[:3, :3].T + c2w_gl[:3, 3]


def _project(point: np.ndarray, meta: dict, c2w_gl: np.ndarray):
    """(u, v, z) of a world point: OpenGL c2w -> OpenCV w2c, then K (pixel centres at +0.5)."""
    c2w_cv = c2w_gl.copy()
    c2w_cv[:3, 1:3] *= -1.0
    w2c = np.linalg.inv(c2w_cv)
    p = w2c[:3, :3] @ point + w2c[:3, 3]
    return meta["fl_x"] * p[0] / p[2] + meta["cx"], meta["fl_y"] * p[1] / p[2] + meta["cy"], p[2]


def _analytic_distance(points: np.ndarray, scene_meta: dict) -> np.ndarray:
    """Distance to the nearest surface, from scene.json's room and objects (independent of the renderer)."""
    lo, hi = np.array(scene_meta["room"]["min"]), np.array(scene_meta["room"]["max"])
    dist = np.minimum(np.abs(points - lo), np.abs(hi - points)).min(axis=1)
    for obj in scene_meta["objects"]:
        c = np.array(obj["center"])
        if obj["type"] == "sphere":
            d = np.abs(np.linalg.norm(points - c, axis=1) - obj["radius"])
        else:
            q = np.abs(points - c) - np.array(obj["half_size"])
            d = np.abs(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))
        dist = np.minimum(dist, d)
    return dist


def test_layout_counts_and_intrinsics(small_scene: Path):
    train = _load(small_scene / "transforms.json")
    query = _load(small_scene / "queries" / "transforms.json")
    meta = _load(small_scene / "scene.json")
    assert len(train["frames"]) == SMALL.num_train and len(query["frames"]) == SMALL.num_query
    assert meta["num_train"] == SMALL.num_train and meta["num_query"] == SMALL.num_query
    assert meta["seed"] == SMALL.seed and "generator_version" in meta
    assert meta["lighting"]["train"] != meta["lighting"]["query"]
    lo, hi = np.array(meta["room"]["min"]), np.array(meta["room"]["max"])
    assert meta["scene_extent"] == pytest.approx(np.linalg.norm(hi - lo))
    expected_f = (SMALL.width / 2) / math.tan(math.radians(SMALL.fov_x_deg) / 2)
    for doc, base, prefix in ((train, small_scene, "train"), (query, small_scene / "queries", "query")):
        assert doc["camera_model"] == "OPENCV"
        assert (doc["w"], doc["h"]) == (SMALL.width, SMALL.height)
        assert doc["fl_x"] == pytest.approx(expected_f) and doc["fl_y"] == pytest.approx(expected_f)
        assert (doc["cx"], doc["cy"]) == (SMALL.width / 2, SMALL.height / 2)
        assert all(doc[k] == 0 for k in ("k1", "k2", "p1", "p2"))
        for i, frame in enumerate(doc["frames"]):
            assert frame["file_path"] == f"images/{prefix}_{i:03d}.png"
            with Image.open(base / frame["file_path"]) as im:
                assert im.mode == "RGB" and im.size == (SMALL.width, SMALL.height)
            c2w = np.array(frame["transform_matrix"])
            assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
            assert np.allclose(c2w[:3, :3] @ c2w[:3, :3].T, np.eye(3), atol=1e-9)
            assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
            assert np.all(np.abs(c2w[:3, 3]) < hi)  # inside the room
            assert c2w[2, 1] > 0.9  # camera y axis (up, OpenGL) is close to world +z
    assert not list(small_scene.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_queries_are_new_poses(small_scene: Path):
    train = np.array([f["transform_matrix"] for f in _load(small_scene / "transforms.json")["frames"]])
    query = np.array([f["transform_matrix"] for f in _load(small_scene / "queries" / "transforms.json")["frames"]])
    gaps = np.linalg.norm(query[:, None, :3, 3] - train[None, :, :3, 3], axis=-1).min(axis=1)
    assert np.all(gaps > 0.1)


def test_backprojected_depth_lies_on_the_surface(small_scene: Path):
    meta = _load(small_scene / "scene.json")
    scene = build_scene(SMALL)
    for transforms in (small_scene / "transforms.json", small_scene / "queries" / "transforms.json"):
        doc = _load(transforms)
        for frame in doc["frames"]:
            c2w = np.array(frame["transform_matrix"])
            _, depth = render_view(c2w, _intrinsics(doc), TRAIN_LIGHTING, scene, supersample=1)
            vv, uu = np.mgrid[0 : doc["h"] : 5, 0 : doc["w"] : 5]
            points = _backproject(uu.ravel(), vv.ravel(), depth[vv, uu].ravel().astype(np.float64), doc, c2w)
            # float32 depth: relative error ~1e-7 of a few units.
            assert np.max(_analytic_distance(points, meta)) < 1e-5 * meta["scene_extent"]


@pytest.mark.parametrize("target", [(0.0, 0.0, 0.0), (0.4, -0.3, 0.2), (-0.5, 0.2, -0.3)])
def test_projected_sphere_point_is_where_the_renderer_draws_it(target):
    """A single sphere seen from several angles: the projection of its nearest point matches the depth map."""
    centre = np.array([0.3, -0.2, 0.1])
    radius = 0.5
    scene = Scene.create(4.0, [centre], [radius], seed=1)
    intr = PinholeIntrinsics.from_fov(64, 48, 60.0)
    meta = {"fl_x": intr.fx, "fl_y": intr.fy, "cx": intr.cx, "cy": intr.cy}
    c2w = look_at(np.array([2.2, 1.0, 0.6]), target, roll_deg=7.0)
    eye = c2w[:3, 3]
    nearest = centre + radius * (eye - centre) / np.linalg.norm(eye - centre)
    u, v, z = _project(nearest, meta, c2w)
    assert 0 <= u < intr.width and 0 <= v < intr.height
    _, depth = render_view(c2w, intr, TRAIN_LIGHTING, scene, supersample=1)
    iu, iv = int(u), int(v)
    # The sphere's surface is nearly fronto-parallel there: within a pixel, depth changes very little.
    assert depth[iv, iu] == pytest.approx(z, abs=2e-3)
    point = _backproject(np.array(iu), np.array(iv), np.array(float(depth[iv, iu])), meta, c2w)
    assert np.linalg.norm(point - nearest) < 1.5 * z / intr.fx
    assert abs(np.linalg.norm(point - centre) - radius) < 1e-5


def test_same_seed_same_bytes_other_seed_differs(small_scene: Path, tmp_path: Path):
    again = generate_scene(tmp_path / "again", SMALL, workers=2)  # rendered in two processes: still the same bytes
    files = sorted(p.relative_to(small_scene) for p in small_scene.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (small_scene / rel).read_bytes() == (again / rel).read_bytes(), rel

    other_cfg = SyntheticSceneConfig(**{**SMALL.__dict__, "seed": SMALL.seed + 1})
    other = generate_scene(tmp_path / "other", other_cfg)
    a = np.asarray(Image.open(small_scene / "images" / "train_000.png"), dtype=np.float64)
    b = np.asarray(Image.open(other / "images" / "train_000.png"), dtype=np.float64)
    assert np.abs(a - b).mean() > 10.0
    poses_a = _load(small_scene / "transforms.json")["frames"][0]["transform_matrix"]
    poses_b = _load(other / "transforms.json")["frames"][0]["transform_matrix"]
    assert not np.allclose(poses_a, poses_b)
    assert _load(small_scene / "scene.json")["objects"] != _load(other / "scene.json")["objects"]


def test_query_lighting_changes_colour_not_geometry(small_scene: Path):
    scene = build_scene(SMALL)
    doc = _load(small_scene / "queries" / "transforms.json")
    intr = _intrinsics(doc)
    for i, frame in enumerate(doc["frames"]):
        c2w = np.array(frame["transform_matrix"])
        rgb_train, depth_train = render_view(c2w, intr, TRAIN_LIGHTING, scene, SMALL.supersample)
        rgb_query, depth_query = render_view(c2w, intr, QUERY_LIGHTING, scene, SMALL.supersample, noise_seed=i)
        assert np.array_equal(depth_train, depth_query)
        assert np.abs(rgb_train - rgb_query).mean() > 0.05
        on_disk = np.asarray(Image.open(small_scene / "queries" / frame["file_path"]), dtype=np.float64) / 255
        assert np.abs(on_disk - rgb_train).mean() > 0.05


def test_images_are_textured_everywhere(small_scene: Path):
    images = sorted(small_scene.glob("images/*.png")) + sorted(small_scene.glob("queries/images/*.png"))
    for path in images:
        img = np.asarray(Image.open(path), dtype=np.float64) / 255.0
        gray = img.mean(axis=2)
        grad = np.hypot(np.diff(gray, axis=0)[:, :-1], np.diff(gray, axis=1)[:-1, :])
        assert grad.mean() > 0.02 and grad.std() > 0.02, path
        tiles = gray[: gray.shape[0] // 6 * 6, : gray.shape[1] // 6 * 6].reshape(gray.shape[0] // 6, 6, -1, 6)
        flat = tiles.std(axis=(1, 3)) < 0.01
        assert flat.mean() < 0.05, path
        assert 0.1 < img.mean() < 0.9, path  # neither black nor blown out


def test_invalid_config_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError):
        generate_scene(tmp_path, SyntheticSceneConfig(camera_radius=5.0))
    with pytest.raises(ValueError):
        generate_scene(tmp_path, SyntheticSceneConfig(supersample=0))


def test_arc_capture_keeps_all_cameras_on_one_side():
    from crossfire_ns.synthetic import SyntheticSceneConfig, sample_poses

    train, query = sample_poses(SyntheticSceneConfig(num_train=12, num_query=4, arc_deg=90.0))
    for poses in (train, query):
        azimuth = np.degrees(np.arctan2(poses[:, 1, 3], poses[:, 0, 3]))
        assert azimuth.min() > -10 and azimuth.max() < 100, azimuth
