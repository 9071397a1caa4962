"""benchmarks.lighting_invariance: pixel-aligned CNN feature comparison, and the bundled scene's training-light queries."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.lighting_invariance import feature_invariance, render_training_light_queries


def _random_conv_encoder(stride: int = 2):
    torch.manual_seed(0)
    weights = torch.randn(16, 3, 5, 5)
    return lambda x: F.normalize(F.conv2d(x - 0.5, weights, stride=stride, padding=2), dim=1)


def test_identical_images_match_everywhere_and_shifted_ones_do_not():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    encode = _random_conv_encoder()
    same = feature_invariance(encode, image, image)
    assert same["mutual"] > 0.9 * 20 * 24 and same["mutual_correct"] == 1.0
    assert same["nearest_correct"] == 1.0 and same["same_pixel_similarity"] == pytest.approx(1.0, abs=1e-5)
    shifted = feature_invariance(encode, image, np.roll(image, 6, axis=1))  # every match lands 6 px away
    assert shifted["mutual_correct"] < 0.1 and shifted["same_pixel_similarity"] < 0.5
    with pytest.raises(ValueError, match="differ in size"):
        feature_invariance(encode, image, image[:20])


def test_training_light_queries_have_the_queries_poses_and_the_training_light(bundled_scene):
    target = render_training_light_queries(bundled_scene)
    frames = json.loads((bundled_scene / "queries" / "transforms.json").read_text())["frames"]
    for frame in frames:
        query = np.asarray(Image.open(bundled_scene / "queries" / frame["file_path"]).convert("RGB"), dtype=float)
        relit = np.asarray(Image.open(target / frame["file_path"]).convert("RGB"), dtype=float)
        assert relit.shape == query.shape
        assert np.abs(relit - query).mean() > 5  # another light
        # same view: the images' edges are where the other's are (gradient magnitudes correlate)
        edges = [np.hypot(*np.gradient(image.mean(-1))).ravel() for image in (query, relit)]
        assert np.corrcoef(*edges)[0, 1] > 0.5
    stamp = (target / frames[0]["file_path"]).stat().st_mtime_ns
    assert render_training_light_queries(bundled_scene) == target  # reused, not rendered again
    assert (target / frames[0]["file_path"]).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_main_on_a_trained_map_scores_identical_images_above_relit_ones(trained_map, bundled_scene, tmp_path):
    from benchmarks.lighting_invariance import LightingInvariance

    config, _ = trained_map
    queries = bundled_scene / "queries"
    relit = LightingInvariance(config, queries, bundled_scene=bundled_scene, output_json=tmp_path / "o.json").main()
    same = LightingInvariance(config, queries, reference_dir=queries).main()
    assert len(relit["per_view"]) == len(same["per_view"]) == 4
    assert json.loads((tmp_path / "o.json").read_text())["mutual_correct"] == relit["mutual_correct"]
    assert same["mutual_correct"] > 0.9 and same["same_pixel_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert relit["same_pixel_similarity"] < same["same_pixel_similarity"]
    with pytest.raises(SystemExit, match="exactly one"):
        LightingInvariance(config, queries).main()
