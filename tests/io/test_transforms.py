"""The nerfstudio-format poses file, written and read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crossfire_ns.io.queries import QueryImage
from crossfire_ns.io.transforms import read_poses_json, write_poses_json
from tests.helpers import pose, sample_covariance, sample_results


def test_poses_json_is_nerfstudio_format(tmp_path: Path):
    K = np.array([[50.0, 0, 20.0], [0, 51.0, 15.0], [0, 0, 1]])
    queries = [
        QueryImage(
            Path("q/images/a.png"),
            "images/a.png",
            K,
            np.array([0.1, 0.0, 0.0, 0.0, 0.0]),
            40,
            30,
            camera_model="OPENCV",
        ),
        QueryImage(Path("q/images/b.png"), "images/b.png", K, None, 40, 30),
        QueryImage(Path("q/images/c.png"), "images/c.png"),
    ]
    path = tmp_path / "poses.json"
    write_poses_json(path, sample_results(), queries, metadata={"model": "crossfire"})
    data = json.loads(path.read_text())
    assert data["metadata"] == {"model": "crossfire"}
    frames = data["frames"]
    assert [f["file_path"] for f in frames] == ["images/a.png", "images/b.png", "images/c.png"]
    assert [f["status"] for f in frames] == ["localized", "failed", "unreadable"]
    np.testing.assert_allclose(frames[0]["transform_matrix"], pose(1.0))
    assert frames[1]["transform_matrix"] is None and frames[2]["transform_matrix"] is None
    assert frames[0]["num_inliers"] == 120 and frames[0]["seconds"] == 1.5
    np.testing.assert_array_equal(frames[0]["covariance"], sample_covariance())
    assert frames[1]["covariance"] is None and frames[2]["covariance"] is None
    assert (frames[0]["fl_x"], frames[0]["cy"], frames[0]["w"], frames[0]["k1"]) == (50.0, 15.0, 40, 0.1)
    assert frames[1]["camera_model"] == "PINHOLE" and "k1" not in frames[1]
    assert "fl_x" not in frames[2]
    poses = read_poses_json(path)
    assert list(poses) == ["images/a.png"]
    np.testing.assert_allclose(poses["images/a.png"], pose(1.0))
