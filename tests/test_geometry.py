"""Camera conventions, nerfstudio's normalisation, back-projection, intrinsics scaling and pose errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from PIL import Image

from crossfire_ns.geometry import (
    backproject,
    c2w_pose_errors,
    distances_along_rays,
    normalized_to_original,
    opencv_w2c_to_opengl_c2w,
    opengl_c2w_to_opencv_w2c,
    original_to_normalized,
    pose_errors,
    project_points,
    read_dataparser_transforms,
    rotation_angle_deg,
    saved_frame_normalization,
    scale_intrinsics,
)

K = np.array([[120.0, 0.0, 41.0], [0.0, 110.0, 29.5], [0.0, 0.0, 1.0]])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    R, _ = cv2.Rodrigues(rng.normal(size=3))
    return R


def random_c2w(rng: np.random.Generator) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = random_rotation(rng)
    c2w[:3, 3] = rng.normal(size=3) * 3
    return c2w


def rotation_about(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    R, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.radians(degrees))
    return R


def test_opengl_opencv_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(10):
        c2w = random_c2w(rng)
        R, t = opengl_c2w_to_opencv_w2c(c2w)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(opencv_w2c_to_opengl_c2w(R, t), c2w, atol=1e-12)
        np.testing.assert_allclose(opencv_w2c_to_opengl_c2w(cv2.Rodrigues(R)[0], t.reshape(3, 1)), c2w, atol=1e-9)
        # 3x4 input gives the same
        R34, t34 = opengl_c2w_to_opencv_w2c(c2w[:3])
        np.testing.assert_allclose(R34, R)
        np.testing.assert_allclose(t34, t)


def test_opengl_to_opencv_axes():
    """A point in front of / above an OpenGL camera is at +z / -y in OpenCV camera coordinates."""
    rng = np.random.default_rng(1)
    c2w = random_c2w(rng)
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    ahead = c2w @ np.array([0.0, 0.0, -2.0, 1.0])  # OpenGL looks along -z
    above = c2w @ np.array([0.0, 1.0, -2.0, 1.0])  # OpenGL y is up
    right = c2w @ np.array([1.0, 0.0, -2.0, 1.0])
    np.testing.assert_allclose(R @ ahead[:3] + t, [0, 0, 2], atol=1e-12)
    np.testing.assert_allclose(R @ above[:3] + t, [0, -1, 2], atol=1e-12)
    np.testing.assert_allclose(R @ right[:3] + t, [1, 0, 2], atol=1e-12)


def _dataparser_transform(rng: np.random.Generator) -> np.ndarray:
    transform = np.zeros((3, 4))
    transform[:, :3] = random_rotation(rng)
    transform[:, 3] = rng.normal(size=3)
    return transform


def test_normalisation_round_trip_batched_and_single():
    rng = np.random.default_rng(2)
    transform, scale = _dataparser_transform(rng), 0.37
    poses = np.stack([random_c2w(rng) for _ in range(5)])
    normalized = original_to_normalized(poses, transform, scale)
    assert normalized.shape == (5, 4, 4)
    np.testing.assert_allclose(normalized_to_original(normalized, transform, scale), poses, atol=1e-12)
    np.testing.assert_allclose(original_to_normalized(poses[2], transform, scale), normalized[2], atol=1e-12)
    np.testing.assert_allclose(normalized_to_original(normalized[2][:3], transform, scale), poses[2], atol=1e-12)
    np.testing.assert_allclose(normalized[:, 3], np.tile([0, 0, 0, 1.0], (5, 1)))


def test_normalisation_matches_nerfstudio_dataparser():
    """Our forward map equals what nerfstudio's dataparser does (auto-orient, centre, scale), and our inverse
    equals DataparserOutputs.transform_poses_to_original_space with the OpenGL convention."""
    rng = np.random.default_rng(3)
    poses = np.stack([random_c2w(rng) for _ in range(8)])
    # float32, as nerfstudio's dataparser feeds it
    ns_poses, transform = camera_utils.auto_orient_and_center_poses(torch.from_numpy(poses).float(), method="up")
    scale = 1.0 / float(torch.max(torch.abs(ns_poses[:, :3, 3])))
    ns_poses[:, :3, 3] *= scale
    transform = transform.double()
    ours = original_to_normalized(poses, transform.numpy(), scale)
    np.testing.assert_allclose(ours[:, :3], ns_poses.numpy(), atol=1e-5)

    outputs = DataparserOutputs(
        image_filenames=[],
        cameras=Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=1.0, fy=1.0, cx=1.0, cy=1.0),
        dataparser_transform=transform,
        dataparser_scale=scale,
    )
    back = outputs.transform_poses_to_original_space(torch.from_numpy(ours[:, :3]), camera_convention="opengl")
    np.testing.assert_allclose(back.numpy(), poses[:, :3], atol=1e-9)
    np.testing.assert_allclose(normalized_to_original(ours, transform.numpy(), scale)[:, :3], back.numpy(), atol=1e-9)
    # nerfstudio's default ("opencv") flips the camera's y and z axes: that is a different camera convention
    back_cv = outputs.transform_poses_to_original_space(torch.from_numpy(ours[:, :3]))
    np.testing.assert_allclose(back_cv.numpy()[:, :, 1:3], -poses[:, :3, 1:3], atol=1e-9)


def test_saved_frame_normalization_matches_nerfstudio_dataparser(tmp_path: Path):
    """With applied_transform/applied_scale in transforms.json, dataparser_transforms.json maps from the original
    data frame, not from the frame of transform_matrix; saved_frame_normalization undoes that difference."""
    rng = np.random.default_rng(8)
    (tmp_path / "images").mkdir()
    frames = []
    for i in range(5):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": random_c2w(rng).tolist()})
    applied = [[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, -0.2], [0.0, 0.0, -1.0, 1.0]]
    meta = {"fl_x": 10, "fl_y": 10, "cx": 4, "cy": 4, "w": 8, "h": 8, "frames": frames}
    meta.update(applied_transform=applied, applied_scale=2.0)
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    config = NerfstudioDataParserConfig(data=tmp_path, eval_mode="all", load_3D_points=False)
    outputs = config.setup().get_dataparser_outputs("train")
    transform, scale = outputs.dataparser_transform.double().numpy(), outputs.dataparser_scale
    saved = np.array([f["transform_matrix"] for f in frames])
    normalized = outputs.cameras.camera_to_worlds.double().numpy()
    assert np.abs(original_to_normalized(saved, transform, scale)[:, :3] - normalized).max() > 0.1
    T, s = saved_frame_normalization(transform, scale, applied, 2.0)
    np.testing.assert_allclose(original_to_normalized(saved, T, s)[:, :3], normalized, atol=1e-5)
    np.testing.assert_allclose(normalized_to_original(normalized, T, s), saved, atol=1e-5)


def test_read_dataparser_transforms(tmp_path: Path):
    rng = np.random.default_rng(4)
    transform = torch.from_numpy(_dataparser_transform(rng))
    outputs = DataparserOutputs(
        image_filenames=[],
        cameras=Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=1.0, fy=1.0, cx=1.0, cy=1.0),
        dataparser_transform=transform,
        dataparser_scale=0.25,
    )
    outputs.save_dataparser_transform(tmp_path / "dataparser_transforms.json")
    loaded, scale = read_dataparser_transforms(tmp_path / "dataparser_transforms.json")
    np.testing.assert_allclose(loaded, transform.numpy())
    assert scale == 0.25


@pytest.mark.parametrize("depth_kind", ["ray", "z"])
def test_backproject_then_project_round_trip(depth_kind):
    rng = np.random.default_rng(5)
    R, t = opengl_c2w_to_opencv_w2c(random_c2w(rng))
    u, v = rng.uniform(0, 82, 50), rng.uniform(0, 59, 50)
    depth = rng.uniform(0.5, 5.0, 50)
    points = backproject(u, v, depth, K, R, t, depth_kind=depth_kind)
    projected, _ = cv2.projectPoints(points, cv2.Rodrigues(R)[0], t, K, None)
    np.testing.assert_allclose(projected.reshape(-1, 2), np.stack([u, v], 1), atol=1e-8)
    ours, cam = project_points(points, K, R, t)
    np.testing.assert_allclose(ours, np.stack([u, v], 1), atol=1e-8)
    np.testing.assert_allclose(cam, points @ R.T + t, atol=1e-12)
    measured = np.linalg.norm(cam, axis=1) if depth_kind == "ray" else cam[:, 2]
    np.testing.assert_allclose(measured, depth, atol=1e-10)
    # off-centre pixels: the two kinds must really differ
    other = backproject(u, v, depth, K, R, t, depth_kind="z" if depth_kind == "ray" else "ray")
    assert np.abs(other - points).max() > 1e-3


def test_backproject_ray_depth_matches_nerfstudio_rays():
    """nerfstudio renders depth along unit ray directions from pixel centres at index + 0.5."""
    rng = np.random.default_rng(6)
    c2w = random_c2w(rng)
    width, height = 82, 59
    camera = Cameras(
        camera_to_worlds=torch.from_numpy(c2w[:3]).float()[None],
        fx=float(K[0, 0]),
        fy=float(K[1, 1]),
        cx=float(K[0, 2]),
        cy=float(K[1, 2]),
        width=width,
        height=height,
        camera_type=CameraType.PERSPECTIVE,
    )
    bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
    directions = bundle.directions.double().numpy()
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-5)  # unit directions
    rows, cols = rng.integers(0, height, 20), rng.integers(0, width, 20)
    depth = rng.uniform(0.5, 4.0, 20)
    nerfstudio_points = bundle.origins.double().numpy()[rows, cols] + directions[rows, cols] * depth[:, None]
    ours = backproject(cols + 0.5, rows + 0.5, depth, K, *opengl_c2w_to_opencv_w2c(c2w), depth_kind="ray")
    np.testing.assert_allclose(ours, nerfstudio_points, atol=1e-4)


def _blob_centroid(image: np.ndarray, origin: str) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    offset = 0.5 if origin == "corner" else 0.0
    weights = image / image.sum()
    return np.array([(weights * (cols + offset)).sum(), (weights * (rows + offset)).sum()])


@pytest.mark.parametrize(
    "factor,interpolation", [(0.5, cv2.INTER_AREA), (0.25, cv2.INTER_AREA), (2.0, cv2.INTER_LINEAR)]
)
def test_scale_intrinsics_follows_cv2_resize(factor, interpolation):
    """Project a point, draw a blob there, resize the image: the blob moves where K' projects the point."""
    width, height = 96, 64
    point_cam = np.array([0.13, -0.07, 1.0])
    uv = (K @ point_cam)[:2]  # corner convention: pixel (i, j) covers [j, j+1] x [i, i+1]
    rows, cols = np.indices((height, width))
    blob = np.exp(-(((cols + 0.5) - uv[0]) ** 2 + ((rows + 0.5) - uv[1]) ** 2) / (2 * 3.0**2))
    resized = cv2.resize(blob, (round(width * factor), round(height * factor)), interpolation=interpolation)
    K_center = K.copy()  # the same camera, with OpenCV's pixel-centre-at-integer convention
    K_center[:2, 2] -= 0.5
    for origin, K_original in (("corner", K), ("center", K_center)):
        expected = (scale_intrinsics(K_original, factor, factor, origin) @ point_cam)[:2]
        np.testing.assert_allclose(_blob_centroid(resized, origin), expected, atol=0.02)
    # plain scaling of the principal point would be wrong in the centre convention
    naive = (np.diag([factor, factor, 1.0]) @ K_center @ point_cam)[:2]
    assert np.abs(_blob_centroid(resized, "center") - naive).max() > 0.1


def test_scale_intrinsics_values():
    scaled = scale_intrinsics(K, 0.5, 0.25)
    np.testing.assert_allclose(scaled, [[60.0, 0, 20.5], [0, 27.5, 7.375], [0, 0, 1]])
    centre = scale_intrinsics(K, 0.5, 0.25, pixel_origin="center")
    np.testing.assert_allclose(centre[:2, 2], [(41.0 + 0.5) * 0.5 - 0.5, (29.5 + 0.5) * 0.25 - 0.5])


def test_pose_errors_known_rotation_and_centre():
    rng = np.random.default_rng(7)
    R_gt = random_rotation(rng)
    t_gt = rng.normal(size=3)
    R_est = rotation_about([1.0, 2.0, -0.5], 10.0) @ R_gt
    centre_gt = -R_gt.T @ t_gt
    centre_est = centre_gt + np.array([0.3, 0.0, -0.4])
    t_est = -R_est @ centre_est
    t_err, r_err = pose_errors(R_est, t_est, R_gt, t_gt)
    assert t_err == pytest.approx(0.5, abs=1e-12)
    assert r_err == pytest.approx(10.0, abs=1e-9)
    # the same through OpenGL camera-to-world matrices
    t2, r2 = c2w_pose_errors(opencv_w2c_to_opengl_c2w(R_est, t_est), opencv_w2c_to_opengl_c2w(R_gt, t_gt))
    assert (t2, r2) == (pytest.approx(0.5, abs=1e-12), pytest.approx(10.0, abs=1e-9))


@pytest.mark.parametrize("degrees", [0.0, 1e-5, 0.01, 45.0, 179.9, 180.0])
def test_rotation_angle_is_accurate_everywhere(degrees):
    R = rotation_about([0.2, -1.0, 0.4], degrees)
    assert rotation_angle_deg(R) == pytest.approx(degrees, abs=1e-9)


def test_distances_along_rays_recover_the_points_and_leave_outliers_out():
    rng = np.random.default_rng(0)
    K = np.array([[100.0, 0.0, 64.0], [0.0, 100.0, 48.0], [0.0, 0.0, 1.0]])
    origin = np.zeros(3)
    truth = rng.uniform([-1, -1, 3], [1, 1, 5], (50, 3))  # in front of all cameras (they look along +z)
    distance = np.linalg.norm(truth - origin, axis=1)
    rays = (truth - origin) / distance[:, None]
    cameras = []
    for centre in ([0.4, 0.0, 0.0], [-0.3, 0.2, 0.1], [0.0, -0.4, 0.0]):
        R = cv2.Rodrigues(rng.normal(0, 0.03, 3))[0]
        cameras.append((K, R, -R @ np.array(centre)))
    observed = np.stack([project_points(truth, *camera)[0] for camera in cameras], axis=1)  # (50, 3, 2)
    observed[:10, 2] += 5.0  # a wrong match in the third camera
    observed[10:15, 1] = np.nan  # not seen by the second
    seed = distance * rng.uniform(0.9, 1.1, len(distance))
    found, inlier, information = distances_along_rays(origin, rays, seed, observed, cameras, max_error_px=1.0)
    assert np.abs(found[10:] / distance[10:] - 1).max() < 1e-6  # from 10% off, to the point
    assert inlier[15:].all() and not inlier[10:15, 1].any() and inlier[10:15, [0, 2]].all()
    assert not inlier[:10].all(axis=1).any()  # a match 5 px off never fits with the others
    assert (information[10:] > 0).all()
