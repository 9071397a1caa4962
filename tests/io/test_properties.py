"""Property-based tests of the parsers that read untrusted input (intrinsics, priors, pose files, image bytes):
each either returns a value that holds its promise or raises its own error naming the input, whatever it is given.
Runs are bounded and derandomized: the same examples on every machine, a few seconds in all."""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossfire_ns.io.pose_formats import check_rigid, read_hloc_poses, read_tum_trajectory
from crossfire_ns.io.queries import (
    FOCAL_RANGE,
    QueryImageError,
    QueryInputError,
    check_intrinsics,
    decode_image,
    load_query_set,
)

BOUNDED = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
SLOW_BOUNDED = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)

any_float = st.floats(allow_nan=True, allow_infinity=True)
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), any_float, st.integers(), st.text(max_size=5)),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=20,
)


def is_rigid(matrix: np.ndarray) -> bool:
    rotation = matrix[:3, :3]
    return (
        matrix.shape == (4, 4)
        and bool(np.isfinite(matrix).all())
        and np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-3)
        and abs(np.linalg.det(rotation) - 1.0) < 1e-3
        and np.array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0])
    )


@BOUNDED
@given(
    fx=any_float, fy=any_float, cx=any_float, cy=any_float, width=st.integers(1, 10_000), height=st.integers(1, 10_000)
)
def test_intrinsics_pass_exactly_when_they_fit_the_image(fx, fy, cx, cy, width, height):
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    side = max(width, height)
    fits = all(FOCAL_RANGE[0] * side <= f <= FOCAL_RANGE[1] * side for f in (fx, fy)) and (
        0 <= cx <= width and 0 <= cy <= height
    )
    try:
        check_intrinsics(K, width, height, "q.png")
    except QueryImageError as err:
        assert not fits and str(err).startswith("q.png: ")
    else:
        assert fits


@BOUNDED
@given(matrix=st.lists(st.lists(any_float, min_size=4, max_size=4), min_size=3, max_size=4))
def test_check_rigid_keeps_only_rigid_poses(matrix):
    try:
        pose = check_rigid(np.array(matrix), "p")
    except ValueError as err:
        assert str(err).startswith("p: ")
    else:
        assert is_rigid(pose)


pose_line = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"), max_size=60),
    st.tuples(
        st.text(alphabet="abc./_", min_size=1, max_size=6),
        st.lists(st.one_of(any_float, st.floats(-2, 2)), min_size=7, max_size=7),
    ).map(lambda t: " ".join([t[0], *map(repr, t[1])])),
)  # fmt: skip


@SLOW_BOUNDED
@given(lines=st.lists(pose_line, max_size=6))
def test_an_hloc_file_gives_rigid_poses_or_an_error_naming_a_line(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "priors.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            poses = read_hloc_poses(path)
        except ValueError as err:
            assert str(err).startswith(f"{path}:")
        else:
            assert all(is_rigid(pose) for pose in poses.values())


@SLOW_BOUNDED
@given(rows=st.lists(st.lists(st.one_of(any_float, st.floats(-1, 1)), min_size=8, max_size=8), min_size=1, max_size=4))
def test_a_tum_file_gives_rigid_poses_or_an_error(rows):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.txt"
        path.write_text("\n".join(" ".join(map(repr, row)) for row in rows) + "\n")
        try:
            stamps, poses = read_tum_trajectory(path)
        except ValueError as err:
            assert str(path) in str(err)
        else:
            assert len(stamps) == len(rows) and all(is_rigid(pose) for pose in poses)


@SLOW_BOUNDED
@given(
    values=st.dictionaries(
        st.sampled_from(["fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "camera_model", "transform_matrix"]),
        any_json,
        max_size=9,
    )
)
def test_a_transforms_json_gives_usable_queries_or_an_error_naming_it(values):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / "a.png")
        frame = {"file_path": "a.png", **{k: v for k, v in values.items() if k == "transform_matrix"}}
        meta = {**{k: v for k, v in values.items() if k != "transform_matrix"}, "frames": [frame]}
        (folder / "transforms.json").write_text(json.dumps(meta))
        try:
            queries, _ = load_query_set(folder)
        except QueryInputError as err:
            assert "transforms.json" in str(err)
        else:
            (query,) = queries
            if query.K is not None:
                check_intrinsics(query.K, query.width, query.height, "a.png")
            assert query.c2w_gt is None or np.isfinite(query.c2w_gt).all()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@BOUNDED
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=300).map(lambda tail: _png()[:40] + tail),
        st.tuples(st.integers(0, len(_png())), st.binary(max_size=8)).map(lambda t: _png()[: t[0]] + t[1]),
        st.binary(max_size=300).map(lambda tail: b"\xff\xd8\xff" + tail),
    )
)
def test_any_bytes_decode_to_rgb_or_a_query_image_error(data):
    try:
        rgb = decode_image(io.BytesIO(data), "upload", max_pixels=10_000)
    except QueryImageError as err:
        assert str(err).startswith("upload: ")
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[0] * rgb.shape[1] <= 10_000 and math.prod(rgb.shape) > 0
