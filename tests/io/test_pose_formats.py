"""hloc results and TUM trajectories, converted both ways against poses.json on known poses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossfire_ns.geometry import opengl_c2w_to_opencv_w2c
from crossfire_ns.io.pose_formats import (
    c2w_to_colmap,
    check_rigid,
    colmap_to_c2w,
    read_hloc_poses,
    read_tum_trajectory,
    write_hloc_results,
    write_tum_trajectory,
)
from crossfire_ns.io.transforms import read_poses_json, write_poses_json
from crossfire_ns.results import QueryResult
from crossfire_ns.synthetic import look_at


def _results():
    poses = [look_at([3.0, 0.5, 1.0], [0, 0, 0], roll_deg=5.0), look_at([-1.0, 2.5, -0.3], [0.2, 0, 0.1])]
    return [
        QueryResult("images/a.png", "localized", poses[0]),
        QueryResult("images/b.png", "failed"),
        QueryResult("sub/c.png", "localized", poses[1]),
    ]


def test_colmap_pose_sees_what_the_camera_sees():
    c2w = look_at([3.0, 0.5, 1.0], [0, 0, 0])
    qvec, tvec = c2w_to_colmap(c2w)
    assert np.linalg.norm(qvec) == pytest.approx(1.0)
    w, x, y, z = qvec
    R = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )  # COLMAP's qvec2rotmat, written out
    target_in_camera = R @ np.zeros(3) + tvec
    assert target_in_camera[2] == pytest.approx(np.linalg.norm([3.0, 0.5, 1.0]))  # straight ahead, +z
    np.testing.assert_allclose(target_in_camera[:2], 0, atol=1e-9)
    R_ref, t_ref = opengl_c2w_to_opencv_w2c(c2w)
    np.testing.assert_allclose(R, R_ref, atol=1e-9)
    np.testing.assert_allclose(colmap_to_c2w(qvec, tvec), c2w, atol=1e-9)


def test_hloc_results_round_trip_against_poses_json(tmp_path: Path):
    results = _results()
    write_poses_json(tmp_path / "poses.json", results)
    write_hloc_results(tmp_path / "results.txt", results)
    lines = (tmp_path / "results.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["images/a.png", "sub/c.png"] and len(lines[0].split()) == 8
    from_hloc, from_json = read_hloc_poses(tmp_path / "results.txt"), read_poses_json(tmp_path / "poses.json")
    assert set(from_hloc) == set(from_json)
    for name in from_json:
        np.testing.assert_allclose(from_hloc[name], from_json[name], atol=1e-8)


def test_hloc_reader_names_the_bad_line(tmp_path: Path):
    path = tmp_path / "priors.txt"
    path.write_text("# comment\n\nimages/a.png 1 0 0 0 0 0 0\nimages/b.png 1 0 0\n")
    with pytest.raises(ValueError, match=r"priors.txt:4: expected"):
        read_hloc_poses(path)


def test_tum_trajectory_round_trip(tmp_path: Path):
    results = _results()
    write_tum_trajectory(tmp_path / "t.txt", results, timestamps=[0.0, 1.0, 2.0])
    stamps, poses = read_tum_trajectory(tmp_path / "t.txt")
    np.testing.assert_allclose(stamps, [0.0, 2.0])
    np.testing.assert_allclose(poses, np.stack([results[0].c2w, results[2].c2w]), atol=1e-8)
    first = np.array((tmp_path / "t.txt").read_text().split()[:4], dtype=float)
    np.testing.assert_allclose(first[1:], results[0].c2w[:3, 3])  # TUM holds the camera centre


@pytest.mark.parametrize(
    "line, words",
    [
        ("a.png nan 0 0 0 0 0 0", "finite"),
        ("a.png 1 0 0 0 inf 0 0", "finite"),
        ("a.png 0 0 0 0 0 0 0", "norm 0"),
        ("a.png 2 0 0 0 0 0 0", "norm 2"),  # not a unit quaternion: a wrong field order, not rounding
    ],
)
def test_hloc_priors_must_be_finite_unit_quaternions(tmp_path: Path, line, words):
    path = tmp_path / "priors.txt"
    path.write_text(f"# name qw qx qy qz tx ty tz\n{line}\n")
    with pytest.raises(ValueError, match=rf"priors.txt:2: .*{words}"):
        read_hloc_poses(path)


def test_hloc_priors_name_each_query_once(tmp_path: Path):
    path = tmp_path / "priors.txt"
    path.write_text("a.png 1 0 0 0 0 0 0\nb.png 1 0 0 0 0 0 0\na.png 1 0 0 0 1 0 0\n")
    with pytest.raises(ValueError, match=r"priors.txt:3: 'a.png' is listed twice \(also line 1\)"):
        read_hloc_poses(path)


def test_tum_rows_must_be_finite(tmp_path: Path):
    (tmp_path / "t.txt").write_text("0 1 2 3 0 0 0 1\n1 nan 2 3 0 0 0 1\n")
    with pytest.raises(ValueError, match="row 2: every value must be a finite number"):
        read_tum_trajectory(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("0 1 2 3 0 0 0 3\n")
    with pytest.raises(ValueError, match="norm 3"):
        read_tum_trajectory(tmp_path / "t.txt")


def test_a_rigid_pose_passes_and_others_are_named():
    pose = look_at([3.0, 0.5, 1.0], [0, 0, 0], roll_deg=5.0)
    np.testing.assert_array_equal(check_rigid(pose, "p"), pose)
    np.testing.assert_array_equal(check_rigid(pose[:3], "p"), pose)
    for bad, words in [
        (pose @ np.diag([2.0, 2.0, 2.0, 1.0]), "not a rotation"),
        (pose @ np.diag([1.0, 1.0, -1.0, 1.0]), "det = -1"),
        (np.where(np.eye(4) > 0, np.inf, 0.0), "finite"),
        (np.eye(3), "shape"),
    ]:
        with pytest.raises(ValueError, match=f"prior 7: .*{words}"):
            check_rigid(bad, "prior 7")
