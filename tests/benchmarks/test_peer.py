"""The structure-based peer (benchmarks.peer): pose pairs, epipolar check, tracks, triangulation from known
poses and PnP, on synthetic geometry where the answer is known exactly."""

import json

import numpy as np
import pytest

from benchmarks.peer.matching import epipolar_inliers, essential_from_poses, sampson_distances
from benchmarks.peer.pairs import pairs_from_poses
from benchmarks.peer.triangulation import build_tracks
from crossfire_ns.geometry import c2w_pose_errors, opengl_c2w_to_opencv_w2c
from crossfire_ns.synthetic import look_at


@pytest.fixture
def pycolmap():
    """pycolmap, or skip (the pure geometry tests run without it; triangulation, PnP and the peer need it)."""
    return pytest.importorskip("pycolmap", reason="the peer needs pycolmap: pip install -e '.[bench]'")


WIDTH, HEIGHT = 320, 240
K = np.array([[260.0, 0.0, 161.0], [0.0, 255.0, 119.0], [0.0, 0.0, 1.0]])
DIST = np.array([0.05, -0.08, 0.001, -0.0005, 0.0])


def _ring(num: int, radius: float = 4.0, arc_deg: float = 120.0, height: float = 0.5) -> np.ndarray:
    """OpenGL camera-to-world poses on an arc, looking at the origin (z up)."""
    angles = np.radians(np.linspace(-arc_deg / 2, arc_deg / 2, num))
    return np.stack([look_at((radius * np.cos(a), radius * np.sin(a), height), (0.0, 0.0, 0.0)) for a in angles])


def _project(camera, c2w: np.ndarray, points: np.ndarray) -> np.ndarray:
    R, t = opengl_c2w_to_opencv_w2c(c2w)
    return np.asarray(camera.img_from_cam(np.ascontiguousarray(points @ R.T + t)))


def test_pairs_from_poses_picks_nearest_views_within_the_angle():
    c2ws = _ring(8, arc_deg=140)
    pairs = pairs_from_poses(c2ws, num_neighbours=2, max_angle_deg=None)
    assert {(i, i + 1) for i in range(7)} <= set(pairs) and all(j - i <= 2 for i, j in pairs)
    assert all(i < j for i, j in pairs_from_poses(c2ws, 3))
    opposite = np.stack([c2ws[0], look_at((-4.0, 0.0, 0.5), (0.0, 0.0, 0.0))])
    assert pairs_from_poses(opposite, 1, max_angle_deg=60) == []


def test_epipolar_check_accepts_true_matches_and_rejects_shuffled_ones():
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (50, 3))
    c2ws = _ring(2, arc_deg=30)
    poses = [opengl_c2w_to_opencv_w2c(c) for c in c2ws]
    normalised = []
    for R, t in poses:
        cam = points @ R.T + t
        normalised.append(cam[:, :2] / cam[:, 2:3])
    E = essential_from_poses(*poses[0], *poses[1])
    assert sampson_distances(normalised[0], normalised[1], E).max() < 1e-9
    shuffled = normalised[1][rng.permutation(50)]
    assert epipolar_inliers(normalised[0], shuffled, poses[0], poses[1], 4.0 / 260.0).mean() < 0.3
    assert epipolar_inliers(normalised[0], normalised[1], poses[0], poses[1], 4.0 / 260.0).all()


def test_tracks_join_chains_and_keep_one_observation_per_image():
    matches = {(0, 1): np.array([[0, 5], [1, 6]]), (1, 2): np.array([[5, 9]]), (0, 2): np.array([[1, 9]])}
    tracks = sorted(build_tracks([3, 7, 10], matches), key=len)
    # keypoint 1 of image 0 and 6 of image 1 join the chain 0:0 - 1:5 - 2:9 through 0:1 - 2:9: one component,
    # with two keypoints of images 0 and 1; one observation per image is kept
    assert len(tracks) == 1
    track = tracks[0]
    assert sorted(track[:, 0].tolist()) == [0, 1, 2]
    assert dict(track.tolist())[2] == 9
    assert build_tracks([2, 2], {(0, 1): np.zeros((0, 2), np.int64)}) == []


def test_triangulation_from_known_poses_then_pnp_recovers_the_query_pose(pycolmap):
    from benchmarks.peer.cameras import cam_from_world, colmap_camera, rigid_to_c2w
    from benchmarks.peer.localization import LocalizationConfig, estimate_pose
    from benchmarks.peer.triangulation import TriangulationConfig, triangulate_tracks

    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, (150, 3))
    c2ws = _ring(5)
    camera = colmap_camera(K, WIDTH, HEIGHT, DIST)
    assert camera.model_name == "OPENCV"
    keypoints = [_project(camera, c2w, points) + rng.normal(0, 0.3, (150, 2)) for c2w in c2ws]
    identity = np.stack([np.arange(150), np.arange(150)], axis=1)
    matches = {(i, i + 1): identity for i in range(4)}
    # wrong matches, as the pipeline sees them: the known-pose epipolar check removes most, the triangulation's
    # RANSAC the others
    wrong = np.concatenate([identity, rng.integers(0, 150, (20, 2))])
    poses = [opengl_c2w_to_opencv_w2c(c) for c in c2ws]
    x0, x1 = (np.asarray(camera.cam_from_img(keypoints[i][wrong[:, i]])) for i in (0, 1))
    keep = epipolar_inliers(x0, x1, poses[0], poses[1], 2.0 / K[0, 0])
    assert keep[:150].mean() > 0.95 and keep[150:].mean() < 0.3
    matches[(0, 1)] = wrong[keep]
    tracks = build_tracks([150] * 5, matches)
    sfm = triangulate_tracks(
        tracks, keypoints, [camera] * 5, [cam_from_world(c) for c in c2ws], TriangulationConfig(max_reprojection_px=2.0)
    )
    assert len(sfm.points3d) >= 140
    ids = sfm.point_ids[2]
    good = ids >= 0
    assert np.abs(sfm.points3d[ids[good]] - points[good]).max() < 0.02

    query_c2w = look_at((3.5, 1.5, 0.9), (0.1, 0.0, 0.0), roll_deg=3.0)
    query_camera = colmap_camera(K, WIDTH, HEIGHT)  # a second camera model (PINHOLE)
    observed = ids[good]
    points2d = _project(query_camera, query_c2w, sfm.points3d[observed]) + rng.normal(0, 0.3, (len(observed), 2))
    outliers = rng.random(len(points2d)) < 0.3
    points2d[outliers] = rng.uniform((0, 0), (WIDTH, HEIGHT), (int(outliers.sum()), 2))
    estimate = estimate_pose(points2d, sfm.points3d[observed], query_camera, LocalizationConfig())
    assert estimate.success and estimate.num_inliers >= 0.6 * len(points2d)
    t_err, r_err = c2w_pose_errors(rigid_to_c2w(estimate.rigid), query_c2w)
    assert t_err < 0.02 and r_err < 0.2
    few = estimate_pose(points2d[:5], sfm.points3d[observed][:5], query_camera, LocalizationConfig())
    assert not few.success and "too few" in few.message


def test_camera_models(pycolmap):
    from benchmarks.peer.cameras import colmap_camera

    assert colmap_camera(K, 10, 10).model_name == "PINHOLE"
    assert colmap_camera(K, 10, 10, np.zeros(5)).model_name == "PINHOLE"
    full = colmap_camera(K, 10, 10, np.array([0.1, 0.0, 0.0, 0.0, 0.01]))
    assert full.model_name == "FULL_OPENCV" and full.params[8] == pytest.approx(0.01)
    assert colmap_camera(K, 10, 10, np.array([0.1, 0.01, 0.0, 0.0]), fisheye=True).model_name == "OPENCV_FISHEYE"


@pytest.fixture(scope="module")
def sharp_scene(tmp_path_factory):
    """The bundled scene at 160x120 with 24 views and its queries at the training lighting."""
    from crossfire_ns.synthetic import TRAIN_LIGHTING, SyntheticSceneConfig, generate_scene

    config = SyntheticSceneConfig(num_train=24, num_query=3, seed=1, supersample=1)
    return generate_scene(tmp_path_factory.mktemp("peer_scene"), config, query_lighting=TRAIN_LIGHTING)


def test_peer_command_writes_ns_localize_outputs_and_reuses_its_map(pycolmap, sharp_scene, tmp_path):
    from benchmarks.peer.pipeline import MATCHER_NAME, SfmPeer

    out = tmp_path / "original"
    peer = SfmPeer(train_dir=sharp_scene, query_dir=sharp_scene / "queries", output_dir=out, scene_extent=7.0)
    assert peer.main() == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matcher"] == MATCHER_NAME and summary["num_queries"] == 3
    assert summary["scene_extent"] == 7.0 and summary["mapping"]["num_points"] > 100
    assert summary["num_localized"] >= 2 and summary["median_rotation_error_deg"] < 1.0
    poses = json.loads((out / "poses.json").read_text())
    assert len(poses["frames"]) == 3 and poses["frames"][0]["fl_x"] > 0
    assert (out / "results.csv").read_text().startswith("file_path,status")
    assert (tmp_path / "peer-map" / "map.npz").is_file()
    again = SfmPeer(train_dir=sharp_scene, query_dir=sharp_scene / "queries", output_dir=tmp_path / "b", max_queries=1)
    assert again.main() == 0
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert second["mapping"].get("cached") is True and second["num_queries"] == 1


def test_clahe_input_stretches_a_dark_image_for_sift():
    from benchmarks.peer.features import SiftConfig, grey_image

    rng = np.random.default_rng(0)
    dark = rng.integers(0, 30, (96, 128, 3), dtype=np.uint8)  # an underexposed, low-contrast image
    plain = grey_image(dark)
    equalised = grey_image(dark, SiftConfig(contrast="clahe"))
    assert plain.dtype == equalised.dtype == np.uint8 and plain.shape == equalised.shape == (96, 128)
    assert np.array_equal(plain, np.round(dark.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8))
    assert equalised.std() > 2 * plain.std() and equalised.max() > plain.max()
