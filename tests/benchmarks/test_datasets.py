"""benchmarks.datasets: 7-Scenes (on the shared sample) and Cambridge Landmarks (on a fixture made here)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from benchmarks.datasets import (
    CAMBRIDGE_FOCAL_PX,
    cambridge_to_transforms,
    convert_dataset,
    dataset_label,
    read_cambridge_list,
    seven_scenes_to_transforms,
)
from crossfire_ns.geometry import opengl_c2w_to_opencv_w2c
from crossfire_ns.io.queries import load_query_set, read_query_image
from crossfire_ns.synthetic import look_at
from tests.conftest import shared_scene


@pytest.mark.shared_data
def test_seven_scenes_splits_poses_and_intrinsics(tmp_path):
    scene = shared_scene("7scenes_stairs_mini")
    train, query = seven_scenes_to_transforms(scene, tmp_path)
    train_meta, query_meta = json.loads(train.read_text()), json.loads(query.read_text())
    # TrainSplit: sequence2, sequence3; TestSplit: sequence1, sequence4; three frames each
    names = [f["file_path"].rsplit("/", 2)[-2:] for f in train_meta["frames"]]
    assert [n[0] for n in names] == ["seq-02"] * 3 + ["seq-03"] * 3
    assert [f["file_path"].split("/")[-2] for f in query_meta["frames"]] == ["seq-01"] * 3 + ["seq-04"] * 3
    assert (train_meta["fl_x"], train_meta["cx"], train_meta["cy"], train_meta["w"]) == (585.0, 320.0, 240.0, 640)
    # seq-01/frame-000000.pose.txt is OpenCV camera-to-world: the OpenGL pose has the same centre, y/z flipped
    c2w_cv = np.loadtxt(scene / "seq-01" / "frame-000000.pose.txt")
    c2w_gl = np.array(query_meta["frames"][0]["transform_matrix"])
    assert np.allclose(c2w_gl[:3, 3], c2w_cv[:3, 3]) and np.allclose(c2w_gl[:3, 0], c2w_cv[:3, 0])
    assert np.allclose(c2w_gl[:3, 1:3], -c2w_cv[:3, 1:3])
    queries, warnings = load_query_set(query.parent)
    assert len(queries) == 6 and all(q.has_gt for q in queries) and not warnings
    assert read_query_image(queries[0]).shape == (480, 640, 3)
    small, _ = seven_scenes_to_transforms(scene, tmp_path / "small", num_queries=2, downscale=4)
    meta = json.loads(small.read_text())
    assert (meta["w"], meta["h"], meta["fl_x"], meta["cx"]) == (160, 120, 585.0 / 4, 80.0)
    assert Image.open(small.parent / meta["frames"][0]["file_path"]).size == (160, 120)
    assert len(json.loads((tmp_path / "small" / "query" / "transforms.json").read_text())["frames"]) == 2


def _cambridge_fixture(root, with_nvm: bool):
    """Two sequences, known poses written as the dataset writes them (centre, world-to-camera quaternion)."""
    poses = {
        "seq1/frame00001.png": look_at((2.0, 0.5, 1.0), (0.0, 0.0, 0.0), roll_deg=5.0),
        "seq1/frame00002.png": look_at((1.5, -1.0, 0.8), (0.2, 0.0, 0.1)),
        "seq2/frame00001.png": look_at((-1.0, 2.0, 1.2), (0.0, 0.3, 0.0)),
    }
    from scipy.spatial.transform import Rotation

    lines = {"train": [], "test": []}
    for i, (name, c2w) in enumerate(poses.items()):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((54, 96, 3), 40 * i, np.uint8)).save(root / name)
        R, _ = opengl_c2w_to_opencv_w2c(c2w)
        x, y, z, w = Rotation.from_matrix(R).as_quat()
        centre = c2w[:3, 3]
        lines["test" if name.startswith("seq2") else "train"].append(
            f"{name} {centre[0]} {centre[1]} {centre[2]} {w} {x} {y} {z}"
        )
    header = "Visual Landmark Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"
    for split, rows in lines.items():
        (root / f"dataset_{split}.txt").write_text(header + "\n".join(rows) + "\n")
    if with_nvm:
        (root / "reconstruction.nvm").write_text(
            "NVM_V3\n\n3\nseq1/frame00001.jpg 80.0 1 0 0 0 0 0 0 0 0\nseq1/frame00002.jpg 82.5 1 0 0 0 0 0 0 0 0\n"
            "seq2/frame00001.jpg 79.0 1 0 0 0 0 0 0 0 0\n\n0\n"
        )
    return poses


def test_cambridge_reads_centres_and_world_to_camera_quaternions(tmp_path):
    poses = _cambridge_fixture(tmp_path / "Shop", with_nvm=False)
    entries = dict(read_cambridge_list(tmp_path / "Shop" / "dataset_train.txt"))
    for name in ("seq1/frame00001.png", "seq1/frame00002.png"):
        assert np.allclose(entries[name], poses[name], atol=1e-9)
    train, query = cambridge_to_transforms(tmp_path / "Shop", tmp_path / "out")
    meta = json.loads(train.read_text())
    assert len(meta["frames"]) == 2 and len(json.loads(query.read_text())["frames"]) == 1
    frame = meta["frames"][0]
    assert frame["fl_x"] == pytest.approx(CAMBRIDGE_FOCAL_PX * 96 / 1920) and (frame["cx"], frame["cy"]) == (48, 27)
    queries, _ = load_query_set(query.parent)
    assert np.allclose(queries[0].c2w_gt, poses["seq2/frame00001.png"], atol=1e-9)
    assert queries[0].K[0, 0] == pytest.approx(CAMBRIDGE_FOCAL_PX * 96 / 1920)


def test_cambridge_focal_lengths_come_from_the_reconstruction(tmp_path):
    _cambridge_fixture(tmp_path / "Shop", with_nvm=True)
    train, _ = convert_dataset(f"cambridge:{tmp_path / 'Shop'}", tmp_path / "out", num_queries=None, downscale=2)
    frames = json.loads(train.read_text())["frames"]
    assert [f["fl_x"] for f in frames] == [40.0, 41.25]  # 80 and 82.5 px, images halved
    assert (frames[0]["w"], frames[0]["h"]) == (48, 27) and not frames[0]["file_path"].startswith("/")
    assert dataset_label(f"cambridge:{tmp_path / 'Shop'}") == "cambridge-Shop"
    with pytest.raises(ValueError, match="7scenes:PATH"):
        convert_dataset("nowhere:", tmp_path, None)
    assert math.isclose(json.loads(train.read_text())["k1"], 0.0)
