"""benchmarks.lighting: the fixed photometric changes applied to query folders."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.lighting import CONDITIONS, DEFAULT_SEED, PhotometricChange, apply_change, image_rng, relight_folder


def _ramp() -> np.ndarray:
    """A 16x16 RGB image covering 0..255 in every channel."""
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    return np.stack([values, values, values], axis=-1)


def test_identity_change_leaves_pixels_unchanged():
    image = _ramp()
    assert np.array_equal(apply_change(image, PhotometricChange()), image)


def test_exposure_darkens_or_brightens_monotonically_and_saturates():
    image = _ramp().astype(np.int64)
    dark = apply_change(_ramp(), PhotometricChange(exposure=0.5)).astype(np.int64)
    bright = apply_change(_ramp(), PhotometricChange(exposure=2.0)).astype(np.int64)
    assert (dark <= image).all() and dark.mean() < image.mean() - 20
    assert (bright >= image).all() and bright.max() == 255
    flat = dark[..., 0].reshape(-1)
    assert (np.diff(flat) >= 0).all()  # order of grey levels is kept
    # half the linear light is 2 ** (-1 / 2.2) of the encoded value
    assert dark[..., 0].reshape(-1)[200] == round(255 * (200 / 255) * 0.5 ** (1 / 2.2))


def test_colour_cast_shifts_the_channel_balance():
    out = apply_change(np.full((4, 4, 3), 128, np.uint8), PhotometricChange(color_gain=(1.25, 1.0, 0.7)))
    r, g, b = out[0, 0].astype(int)
    assert r > g == 128 > b


def test_gamma_keeps_black_and_white_and_moves_mid_tones():
    out = apply_change(_ramp(), PhotometricChange(gamma=1.6))[..., 0].reshape(-1)
    assert out[0] == 0 and out[255] == 255
    assert out[128] == round(255 * (128 / 255) ** 1.6)


def test_noise_is_seeded_per_image_and_has_the_documented_strength():
    grey = np.full((64, 64, 3), 128, np.uint8)
    change = PhotometricChange(noise_std=0.04)
    first = apply_change(grey, change, image_rng(DEFAULT_SEED, 0))
    again = apply_change(grey, change, image_rng(DEFAULT_SEED, 0))
    other = apply_change(grey, change, image_rng(DEFAULT_SEED, 1))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert np.std(first.astype(float) / 255.0) == pytest.approx(0.04, rel=0.1)
    with pytest.raises(ValueError, match="Generator"):
        apply_change(grey, change)


def test_rejects_images_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_change(np.zeros((4, 4), np.uint8), PhotometricChange())
    with pytest.raises(ValueError, match="uint8 RGB"):
        apply_change(np.zeros((4, 4, 3), np.float32), PhotometricChange())


def test_named_conditions():
    assert CONDITIONS["original"] is None
    lighting = CONDITIONS["lighting"]
    assert lighting.exposure < 1 and lighting.gamma != 1 and lighting.noise_std > 0
    assert len(set(lighting.color_gain)) > 1
    assert "EV" in lighting.describe() and "noise" in lighting.describe()
    assert PhotometricChange().describe() == "unchanged"


def test_relight_folder_rewrites_images_and_keeps_cameras(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "b.png"
    outside.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(src / "images" / "a.png")
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(outside)
    pose = np.eye(4).tolist()
    meta = {
        "camera_model": "OPENCV",
        "fl_x": 20.0, "fl_y": 20.0, "cx": 8.0, "cy": 6.0, "w": 16, "h": 12, "k1": 0.05,
        "frames": [
            {"file_path": "images/a.png", "transform_matrix": pose},
            {"file_path": str(outside), "transform_matrix": pose, "extra": 3},
        ],
    }  # fmt: skip
    (src / "transforms.json").write_text(json.dumps(meta))
    written = relight_folder(src, tmp_path / "dst", CONDITIONS["lighting"])
    out = json.loads(written.read_text())
    assert [f["file_path"] for f in out["frames"]] == ["images/a.png", "images/b.png"]
    assert out["frames"][1]["extra"] == 3 and out["frames"][0]["transform_matrix"] == pose
    assert {k: out[k] for k in ("fl_x", "cx", "w", "h", "k1")} == {
        "fl_x": 20.0,
        "cx": 8.0,
        "w": 16,
        "h": 12,
        "k1": 0.05,
    }
    assert out["photometric_change"]["exposure"] == CONDITIONS["lighting"].exposure
    first = np.asarray(Image.open(tmp_path / "dst" / "images" / "a.png"))
    assert first.shape == (12, 16, 3)
    assert not np.array_equal(first, np.asarray(Image.open(src / "images" / "a.png")))
    relight_folder(src, tmp_path / "again", CONDITIONS["lighting"])
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again" / "images" / "a.png")))
    assert not list((tmp_path / "dst").rglob("*.tmp*"))


def test_motion_blur_kernel_is_a_centred_line_of_the_given_length():
    from benchmarks.lighting import motion_blur_kernel

    nine = motion_blur_kernel(9.0)
    assert nine.shape == (9, 9) and np.allclose(nine[4], 1 / 9) and nine.sum() == pytest.approx(1.0)
    assert np.count_nonzero(nine) == 9
    partial = motion_blur_kernel(7.6)  # fox's 135 px x 5.6%: seven whole taps and two 0.3 end taps
    assert partial.shape == (9, 9) and partial[4, 0] == pytest.approx(partial[4, 8]) == pytest.approx(0.3 / 7.6)
    vertical = motion_blur_kernel(9.0, 90.0)
    assert vertical[:, 4].sum() > 0.95  # rotated onto the column


def test_blur_condition_smears_along_the_width_only():
    blur = CONDITIONS["blur"]
    assert blur.blur_length * 160 == pytest.approx(9.0) and blur.blur_angle_deg == 0 and blur.noise_std == 0
    image = np.zeros((40, 160, 3), np.uint8)
    image[:, 80] = 255  # a bright column
    image[20, :] = 255  # a bright row
    out = apply_change(image, blur).astype(int)
    lit = np.flatnonzero(out[5, :, 0])
    assert lit.tolist() == list(range(76, 85))  # 9 px wide, centred on column 80
    assert (out[20, :, 0] == 255).all() and out[19, 10, 0] == 0  # the row stays a row
    assert "horizontal" in blur.describe() and "5.62% of the image width" in blur.describe()


def test_lowlight_is_dark_noisy_and_seeded():
    low = CONDITIONS["lowlight"]
    assert (low.exposure, low.gamma, low.noise_std) == (pytest.approx(0.2**2.2), 1.4, 0.03)
    grey = np.full((64, 64, 3), 160, np.uint8)
    out = apply_change(grey, low, image_rng(DEFAULT_SEED, 0))
    expected = 255 * (160 / 255 * 0.2) ** 1.4  # x0.2 on the encoded value, then the tone curve
    assert out.mean() == pytest.approx(expected, abs=1.0) and out.mean() < 20
    assert np.std(out / 255.0) == pytest.approx(0.03, rel=0.15)
    assert np.array_equal(out, apply_change(grey, low, image_rng(DEFAULT_SEED, 0)))
