"""Reading query folders: good sets, and every bad input with a message that names the file and says how to fix."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from crossfire_ns.io.queries import (
    EXIF_ORIENTATION,
    MAX_IMAGE_PIXELS,
    PIXELS_SIDE_FACTOR,
    ImageTooLargeError,
    QueryImage,
    QueryImageError,
    QueryInputError,
    check_intrinsics,
    decode_image,
    downscale_to,
    image_to_rgb,
    load_query_set,
    pixel_cap,
    read_query_image,
    undistort_if_needed,
)

W, H = 40, 30


def write_image(path: Path, width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def c2w(x: float) -> list:
    matrix = np.eye(4)
    matrix[0, 3] = x
    return matrix.tolist()


def write_transforms(folder: Path, frames: list, **global_keys) -> Path:
    meta = {"fl_x": 50.0, "fl_y": 51.0, "cx": W / 2, "cy": H / 2, "w": W, "h": H, **global_keys, "frames": frames}
    path = folder / "transforms.json"
    path.write_text(json.dumps(meta))
    return path


# --- good sets -----------------------------------------------------------------------------------------------------


def test_folder_without_transforms(tmp_path: Path):
    write_image(tmp_path / "b.JPG")
    expected = write_image(tmp_path / "a.png", seed=1)
    (tmp_path / "notes.txt").write_text("not an image")
    queries, warnings = load_query_set(tmp_path)
    assert [q.file_path for q in queries] == ["a.png", "b.JPG"]
    assert all(q.K is None and q.c2w_gt is None for q in queries)
    assert warnings and "intrinsics" in warnings[0]
    np.testing.assert_array_equal(read_query_image(queries[0]), expected)


def test_folder_with_intrinsics_override(tmp_path: Path):
    write_image(tmp_path / "a.png")
    queries, warnings = load_query_set(tmp_path, intrinsics_override=(10.0, 11.0, 20.0, 15.0))
    np.testing.assert_allclose(queries[0].K, [[10, 0, 20], [0, 11, 15], [0, 0, 1]])
    assert warnings == []


def test_transforms_global_and_per_frame_keys(tmp_path: Path):
    write_image(tmp_path / "images" / "q0.png")
    write_image(tmp_path / "images" / "q1.png", width=2 * W, height=2 * H)
    write_image(tmp_path / "unlisted.png")
    frames = [
        {"file_path": "images/q0.png", "transform_matrix": c2w(1.0)},
        {"file_path": "images/q1.png", "fl_x": 100.0, "fl_y": 102.0, "cx": W, "cy": H, "w": 2 * W, "h": 2 * H,
         "k1": 0.1, "p2": 0.01},
    ]  # fmt: skip
    write_transforms(tmp_path, frames, camera_model="OPENCV")
    queries, warnings = load_query_set(tmp_path)
    assert [q.file_path for q in queries] == ["images/q0.png", "images/q1.png"]
    q0, q1 = queries
    np.testing.assert_allclose(q0.K, [[50, 0, W / 2], [0, 51, H / 2], [0, 0, 1]])
    assert (q0.width, q0.height) == (W, H) and q0.dist_coeffs is None
    np.testing.assert_allclose(q0.c2w_gt, c2w(1.0))
    np.testing.assert_allclose(q1.K, [[100, 0, W], [0, 102, H], [0, 0, 1]])
    assert (q1.width, q1.height) == (2 * W, 2 * H) and q1.c2w_gt is None
    np.testing.assert_allclose(q1.dist_coeffs, [0.1, 0.0, 0.0, 0.01, 0.0])  # OpenCV order k1 k2 p1 p2 k3
    assert any("unlisted.png" in w for w in warnings)  # not a query, but the user is told
    assert any("transform_matrix" in w for w in warnings)  # ground truth on only some frames
    assert read_query_image(q1).shape == (2 * H, 2 * W, 3)


def test_transforms_without_any_intrinsics_gives_k_none(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(json.dumps({"frames": [{"file_path": "a.png"}]}))
    queries, warnings = load_query_set(tmp_path)
    assert queries[0].K is None and any("no intrinsics" in w for w in warnings)


def test_undistort_keeps_k_and_inverts_distortion():
    K = np.array([[80.0, 0, 48.0], [0, 80.0, 32.0], [0, 0, 1.0]])
    dist = np.array([-0.4, 0.1, 0.0, 0.0, 0.0])
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    assert undistort_if_needed(image, K, None) is image
    assert undistort_if_needed(image, K, np.zeros(5)) is image
    # a dot at undistorted pixel u lands, in the distorted image, where OpenCV's model sends it
    K_cv = K.copy()
    K_cv[:2, 2] -= 0.5
    target = np.array([[85.0, 55.0]])  # centre-convention pixel in the undistorted image
    ray = np.linalg.solve(K_cv, [target[0, 0], target[0, 1], 1.0])
    distorted, _ = cv2.projectPoints(ray[None], np.zeros(3), np.zeros(3), K_cv, dist)
    u, v = np.round(distorted.reshape(2)).astype(int)
    assert np.hypot(u - target[0, 0], v - target[0, 1]) > 4  # the distortion moves it visibly
    image[v - 1 : v + 2, u - 1 : u + 2] = 255
    out = undistort_if_needed(image, K, dist)
    assert out.shape == image.shape
    peak = np.unravel_index(out[..., 0].astype(float).argmax(), out.shape[:2])
    assert abs(peak[1] - target[0, 0]) <= 1 and abs(peak[0] - target[0, 1]) <= 1


# --- fatal problems with the set ---------------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path):
    with pytest.raises(QueryInputError, match="does not exist") as info:
        load_query_set(tmp_path / "nope")
    assert "nope" in str(info.value) and "Pass an existing folder" in str(info.value)


def test_empty_folder(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(QueryInputError, match="no query images") as info:
        load_query_set(tmp_path)
    assert str(tmp_path) in str(info.value) and "Put the query images" in str(info.value)


def test_empty_folder_points_to_subfolder(tmp_path: Path):
    write_image(tmp_path / "images" / "a.png")
    with pytest.raises(QueryInputError, match="sub-folders") as info:
        load_query_set(tmp_path)
    assert "images" in str(info.value) and "pass that folder" in str(info.value)


def test_invalid_json_names_line_and_column(tmp_path: Path):
    write_image(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text('{\n  "frames": [\n    {"file_path": "a.png",}\n  ]\n}\n')
    with pytest.raises(QueryInputError) as info:
        load_query_set(tmp_path)
    message = str(info.value)
    assert "transforms.json" in message and "line 3" in message and "column" in message and "Fix" in message


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({"fl_x": 1.0}, "'frames'"),
        ({"frames": []}, "empty"),
        ({"frames": [{"transform_matrix": c2w(0)}]}, "'file_path'"),
        ({"fl_x": 50.0, "fl_y": 50.0, "frames": [{"file_path": "a.png"}]}, "'cx', 'cy', 'w', 'h'"),
        ({"fl_x": 50.0, "fl_y": 50.0, "cx": 1, "cy": 1, "w": 40.5, "h": 30, "frames": [{"file_path": "a.png"}]}, "'w'"),
        (
            {"fl_x": "fifty", "fl_y": 50.0, "cx": 1, "cy": 1, "w": 40, "h": 30, "frames": [{"file_path": "a.png"}]},
            "'fl_x'",
        ),
        ({"frames": [{"file_path": "a.png", "transform_matrix": [[1, 0, 0], [0, 1, 0]]}]}, "shape (2, 3)"),
        ({"frames": [{"file_path": "a.png", "transform_matrix": [["x"] * 4] * 4}]}, "numeric"),
        ({"camera_model": "EQUIRECTANGULAR", "frames": [{"file_path": "a.png"}]}, "not supported"),
        ({"frames": [{"file_path": "a.png", "k4": 0.1}]}, "k4"),
    ],
)
def test_malformed_transforms(tmp_path: Path, meta, expected):
    write_image(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(QueryInputError) as info:
        load_query_set(tmp_path)
    message = str(info.value)
    assert "transforms.json" in message and expected in message
    assert "Fix" in message or "Undistort" in message


def test_frame_pointing_to_missing_file(tmp_path: Path):
    write_image(tmp_path / "a.png")
    write_transforms(tmp_path, [{"file_path": "a.png"}, {"file_path": "images/missing.png"}])
    with pytest.raises(QueryInputError) as info:
        load_query_set(tmp_path)
    message = str(info.value)
    assert "frames[1]" in message and "missing.png" in message and "does not exist" in message
    assert "Fix 'file_path'" in message


# --- per-image problems: not fatal -----------------------------------------------------------------------------


def test_corrupt_file_among_good_ones(tmp_path: Path):
    write_image(tmp_path / "good1.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    write_image(tmp_path / "good2.jpeg")
    queries, _ = load_query_set(tmp_path)
    assert [q.file_path for q in queries] == ["broken.jpg", "good1.png", "good2.jpeg"]
    assert read_query_image(queries[1]).shape == (H, W, 3)
    assert read_query_image(queries[2]).shape == (H, W, 3)
    with pytest.raises(QueryImageError) as info:
        read_query_image(queries[0])
    assert "broken.jpg" in str(info.value) and "Replace it" in str(info.value)


def test_truncated_png_is_a_query_image_error(tmp_path: Path):
    write_image(tmp_path / "a.png", width=200, height=200)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(data[: len(data) // 2])
    queries, _ = load_query_set(tmp_path)
    with pytest.raises(QueryImageError, match="a.png"):
        read_query_image(queries[0])


def test_size_disagreeing_with_intrinsics(tmp_path: Path):
    write_image(tmp_path / "small.png", width=W // 2, height=H // 2)
    write_image(tmp_path / "ok.png")
    write_transforms(tmp_path, [{"file_path": "small.png"}, {"file_path": "ok.png"}])
    queries, _ = load_query_set(tmp_path)
    assert read_query_image(queries[1]).shape == (H, W, 3)
    with pytest.raises(QueryImageError) as info:
        read_query_image(queries[0])
    message = str(info.value)
    assert "small.png" in message and f"{W // 2}x{H // 2}" in message and f"{W}x{H}" in message
    assert "Fix 'w'/'h'" in message


def test_rgba_and_grayscale_become_rgb(tmp_path: Path):
    Image.fromarray(np.full((H, W, 4), 200, dtype=np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((H, W), 100, dtype=np.uint8)).save(tmp_path / "gray.png")
    queries, _ = load_query_set(tmp_path)
    for query in queries:
        image = read_query_image(query)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8


def test_rgba_is_composited_on_white_as_in_training(tmp_path: Path):
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = 40
    rgba[:, : W // 2, 3] = 255  # left half opaque, right half transparent
    rgba[:, W // 2 :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = read_query_image(QueryImage(tmp_path / "a.png", "a.png"))
    assert (image[:, : W // 2] == 40).all() and (image[:, W // 2 :] == 255).all()


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path):
    grey = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = read_query_image(QueryImage(tmp_path / "deep.png", "deep.png"))
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_allclose(image[..., 0], grey / 257.0, atol=0.51)
    assert image.std() > 50  # the old read clipped everything above 255 to white: a flat, textureless image


def test_exif_orientation_is_refused_with_the_fix(tmp_path: Path):
    image = Image.fromarray(write_image(tmp_path / "plain.jpg"))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90 degrees to display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    with pytest.raises(QueryImageError, match="EXIF orientation 6.*exif_transpose"):
        read_query_image(QueryImage(tmp_path / "rotated.jpg", "rotated.jpg"))
    upright = Image.Exif()
    upright[EXIF_ORIENTATION] = 1
    image.save(tmp_path / "upright.jpg", exif=upright.tobytes())
    assert read_query_image(QueryImage(tmp_path / "upright.jpg", "upright.jpg")).shape == (H, W, 3)


def test_downscale_scales_intrinsics_with_the_pixels():
    K = np.array([[400.0, 0, 200.0], [0, 400.0, 150.0], [0, 0, 1]])
    image = np.zeros((300, 400, 3), np.uint8)
    small, K_small = downscale_to(image, K, 100)
    assert small.shape == (75, 100, 3)
    np.testing.assert_allclose(K_small, np.diag([0.25, 0.25, 1.0]) @ K)
    same, K_same = downscale_to(image, K, 400)
    assert same is image and K_same is K


# --- bounds: formats, pixels, intrinsics ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "WEBP", "PPM"])
def test_only_png_and_jpeg_are_decoded(tmp_path: Path, fmt):
    path = tmp_path / "a.png"  # the suffix lies: the content decides, and only PNG and JPEG decoders run
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(path, format=fmt)
    with pytest.raises(QueryImageError, match="a.png: .*neither PNG nor JPEG"):
        read_query_image(QueryImage(path, "a.png"))


def test_an_eps_file_never_reaches_ghostscript(tmp_path: Path, monkeypatch):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    monkeypatch.setattr("PIL.EpsImagePlugin.Ghostscript", lambda *a, **k: pytest.fail("Ghostscript ran"))
    with pytest.raises(QueryImageError, match="neither PNG nor JPEG"):
        read_query_image(QueryImage(path, "a.jpg"))


def test_the_pixel_cap_is_read_from_the_header_before_decoding(tmp_path: Path, monkeypatch):
    write_image(tmp_path / "a.png")
    decoded = []
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: decoded.append(1))
    with pytest.raises(ImageTooLargeError, match=f"a.png: the image is {W}x{H}, {W * H} pixels, more than the 100"):
        decode_image(tmp_path / "a.png", "a.png", max_pixels=100)
    assert not decoded


def test_pixel_cap_from_max_image_side():
    assert pixel_cap(None) == MAX_IMAGE_PIXELS and pixel_cap(10**6) == MAX_IMAGE_PIXELS
    assert pixel_cap(100) == (PIXELS_SIDE_FACTOR * 100) ** 2


@pytest.mark.parametrize(
    "fx, fy, cx, cy, words",
    [
        (1e308, 50.0, W / 2, H / 2, "fx=1e\\+308 px is not a focal length"),
        (0.5, 50.0, W / 2, H / 2, "fx=0.5 px is not a focal length"),
        (50.0, -50.0, W / 2, H / 2, "fy=-50 px"),
        (50.0, 50.0, W + 1, H / 2, "principal point"),
        (50.0, 50.0, W / 2, -0.5, "principal point"),
        (np.nan, 50.0, W / 2, H / 2, "finite"),
    ],
)
def test_intrinsics_must_fit_the_image(fx, fy, cx, cy, words):
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    with pytest.raises(QueryImageError, match=f"q.png: .*{words}"):
        check_intrinsics(K, W, H, "q.png")
    check_intrinsics(np.array([[50.0, 0, W], [0, 50.0, 0], [0, 0, 1]]), W, H, "q.png")  # edges are inside


def test_transforms_intrinsics_outside_the_image_are_refused(tmp_path: Path):
    write_image(tmp_path / "a.png")
    write_transforms(tmp_path, [{"file_path": "a.png"}], cx=10 * W)
    with pytest.raises(QueryInputError, match="frames\\[0\\].*principal point .* outside the 40x30 image"):
        load_query_set(tmp_path)


def test_alpha_compositing_in_integers_matches_the_float_formula():
    alpha, colour = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.stack([colour, colour, colour, alpha], axis=-1).astype(np.uint8)
    expected = rgba[..., :3] / 255.0 * (rgba[..., 3:] / 255.0) + (1.0 - rgba[..., 3:] / 255.0)
    got = image_to_rgb(Image.fromarray(rgba, mode="RGBA"))
    np.testing.assert_array_equal(got, np.clip(np.round(expected * 255.0), 0, 255).astype(np.uint8))


def test_16_bit_grey_in_integers_matches_the_float_formula():
    grey = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = image_to_rgb(Image.fromarray(grey))
    np.testing.assert_array_equal(got[..., 0], np.round(grey * (255.0 / 65535.0)).astype(np.uint8))
