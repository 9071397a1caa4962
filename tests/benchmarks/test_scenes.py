"""benchmarks.scenes: the four scenes as nerfstudio train/query folders (real ones skipped without the data)."""

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.scenes import (
    SceneSizes,
    blender_to_transforms,
    camera_extent,
    fox_to_transforms,
    llff_to_transforms,
    prepare_scene,
    select_evenly,
)
from crossfire_ns.io.queries import load_query_set, read_query_image
from tests.conftest import shared_scene


def test_select_evenly():
    assert select_evenly(17, 3) == [0, 8, 16]
    assert select_evenly(5, None) == select_evenly(5, 9) == [0, 1, 2, 3, 4]
    assert select_evenly(10, 1) == [5] and select_evenly(10, 0) == []
    assert len(select_evenly(100, 7)) == 7


def test_camera_extent_is_the_diagonal_of_the_camera_box():
    c2ws = np.tile(np.eye(4), (3, 1, 1))
    c2ws[1, :3, 3] = (3.0, 0.0, 0.0)
    c2ws[2, :3, 3] = (0.0, 4.0, 0.0)
    assert camera_extent(c2ws) == pytest.approx(5.0)
    assert camera_extent(np.tile(np.eye(4), (2, 1, 1))) == 1.0


def test_synthetic_scene_has_original_and_relit_queries(tmp_path):
    sizes = SceneSizes(num_queries=2, synthetic_size=(40, 30), synthetic_num_train=6)
    scene = prepare_scene("synthetic", tmp_path, tmp_path, sizes, with_relit=True)
    assert (scene.num_train, scene.num_queries, scene.image_size) == (6, 2, (40, 30))
    original, _ = load_query_set(scene.query_dir)
    relit, _ = load_query_set(scene.extra_conditions["relit"])
    assert np.allclose(original[0].c2w_gt, relit[0].c2w_gt)
    assert not np.array_equal(read_query_image(original[0]), read_query_image(relit[0]))
    stamp = (scene.train_dir / "transforms.json").stat().st_mtime_ns
    again = prepare_scene("synthetic", tmp_path, tmp_path, sizes, with_relit=True)
    assert again.query_dir == scene.query_dir
    assert (scene.train_dir / "transforms.json").stat().st_mtime_ns == stamp  # reused, not rendered again


@pytest.mark.shared_data
def test_fox_keeps_splits_and_distortion(tmp_path):
    train, query = fox_to_transforms(shared_scene("ingp_fox"), tmp_path, downscale=20, num_queries=2)
    train_meta = json.loads(train.read_text())
    assert len(train_meta["frames"]) == 50 and (train_meta["w"], train_meta["h"]) == (54, 96)
    assert train_meta["fl_x"] == pytest.approx(1375.52 / 20) and train_meta["k1"] == pytest.approx(0.0578421)
    queries, _ = load_query_set(query.parent)
    assert [q.file_path for q in queries] == ["images/0005.png", "images/0113.png"]
    assert queries[0].dist_coeffs is not None and queries[0].dist_coeffs[2] == pytest.approx(-0.000980296)
    assert read_query_image(queries[0]).shape == (96, 54, 3)


@pytest.mark.shared_data
def test_lego_is_composited_on_white_and_resized(tmp_path):
    train, query = blender_to_transforms(shared_scene("nerf_synthetic_lego"), tmp_path, size=32, num_queries=3)
    meta = json.loads(train.read_text())
    assert len(meta["frames"]) == 100 and meta["w"] == 32
    assert meta["fl_x"] == pytest.approx(0.5 * 32 / np.tan(0.5 * 0.6911112070083618))
    image = np.asarray(Image.open(train.parent / meta["frames"][0]["file_path"]))
    assert image.shape == (32, 32, 3) and (image[0, 0] == 255).all()
    assert len(json.loads(query.read_text())["frames"]) == 3


@pytest.mark.shared_data
def test_fern_query_subset(tmp_path):
    train, query = llff_to_transforms(shared_scene("llff_fern"), tmp_path, num_queries=2)
    assert len(json.loads(train.read_text())["frames"]) == 17
    assert [_name(f) for f in json.loads(query.read_text())["frames"]] == ["IMG_4026.png", "IMG_4042.png"]


def _name(frame: dict) -> str:
    return frame["file_path"].rsplit("/", 1)[-1]


def test_heldout_family_expands_and_is_generated_with_depth(tmp_path, monkeypatch):
    from benchmarks import scenes

    assert scenes.expand_scenes(["synthetic-heldout", "fox", "heldout-room"]) == [
        "heldout-room",
        "heldout-orbit",
        "fox",
    ]
    assert scenes.expand_scenes(["7scenes:/x/stairs"]) == ["7scenes:/x/stairs"]
    with pytest.raises(ValueError, match="unknown scene"):
        scenes.expand_scenes(["heldout-nowhere"])
    assert scenes.HELDOUT_SCENES["heldout-room"] == scenes.HeldoutScene("inside-out", 128, 96, 60, 12, seed=101)
    tiny = scenes.HeldoutScene("inside-out", 32, 24, num_train=4, num_query=3, seed=101)
    monkeypatch.setitem(scenes.HELDOUT_SCENES, "heldout-room", tiny)
    scene = prepare_scene("heldout-room", tmp_path, tmp_path, SceneSizes(num_queries=2), with_relit=True)
    assert (scene.num_train, scene.num_queries, scene.image_size) == (4, 2, (32, 24))
    meta = json.loads((scene.train_dir / "scene.json").read_text())
    assert meta["config"]["layout"] == "inside-out" and meta["config"]["seed"] == 101
    assert len(meta["depth"]["train"]) == 4 and (scene.train_dir / meta["depth"]["query"][0]).is_file()
    assert "relit" in scene.extra_conditions and scene.protocol == "relative"


def test_generated_scene_has_novel_view_queries_off_its_training_poses(tmp_path):
    sizes = SceneSizes(num_queries=2, synthetic_size=(40, 30), synthetic_num_train=6)
    scene = prepare_scene("synthetic", tmp_path, tmp_path, sizes, with_novel=True)
    novel, _ = load_query_set(scene.extra_conditions["novel-view"])
    original, _ = load_query_set(scene.query_dir)
    assert len(novel) == 2
    assert all(not np.allclose(n.c2w_gt, o.c2w_gt) for n in novel for o in original)
    assert "novel-view" not in prepare_scene("synthetic", tmp_path / "plain", tmp_path, sizes).extra_conditions
