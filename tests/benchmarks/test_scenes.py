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

    assert scenes.expand_scenes(["synthetic-heldout", "fox", "heldout-room"]) == [*scenes.HELDOUT_SCENES, "fox"]
    assert list(scenes.HELDOUT_SCENES)[:2] == ["heldout-room", "heldout-orbit"]
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
    corridor = scenes.HeldoutScene("corridor", 32, 24, 4, 2, seed=505, options=(("room_half_size", 3.2),))
    monkeypatch.setitem(scenes.HELDOUT_SCENES, "heldout-corridor", corridor)
    scene = prepare_scene("heldout-corridor", tmp_path / "corridor", tmp_path, SceneSizes(num_queries=2))
    meta = json.loads((scene.train_dir / "scene.json").read_text())
    assert meta["config"]["layout"] == "corridor" and meta["room"]["max"] == [9.0, 2.5, 3.2]
    assert scene.num_queries == 2 and len(meta["depth"]["query"]) == 2


def test_heldout_family_is_large_varied_and_keeps_its_published_scenes():
    from dataclasses import replace

    from benchmarks import scenes
    from crossfire_ns.synthetic import (
        NUM_ROOM_FACES,
        PinholeIntrinsics,
        SyntheticSceneConfig,
        build_scene,
        cast_rays,
        pixel_rays,
        sample_poses,
        surface_distance,
    )
    from crossfire_ns.synthetic.writer import validate_config

    family = scenes.HELDOUT_SCENES
    # the published scenes are exactly what they were
    assert family["heldout-room"].config() == SyntheticSceneConfig(
        width=128, height=96, num_train=60, num_query=12, seed=101, layout="inside-out", write_depth=True
    )
    assert family["heldout-orbit"].config() == SyntheticSceneConfig(
        width=144, height=108, num_train=48, num_query=12, seed=202, texture_scale=0.7, layout="orbit", write_depth=True
    )
    assert len(family) >= 6 and {"inside-out", "orbit", "corridor", "wall"} <= {s.layout for s in family.values()}
    assert len({s.config().room_half_size for s in family.values() if s.layout == "inside-out"}) >= 2  # room sizes
    assert len({s.seed for s in family.values()}) == len(family)
    assert all(s.num_query >= 12 and 40 <= s.num_train <= 60 for s in family.values())
    assert [n for n, s in family.items() if (s.width, s.height) == (640, 480)] == ["heldout-room-large"]  # only one
    assert max(s.width for s in family.values()) <= 640
    assert scenes.SCENE_FAMILIES["synthetic-heldout"] == tuple(family)
    for name, spec in family.items():
        assert name not in scenes.SCENE_TRAIN_ARGS  # trained with the defaults, no per-scene flag
        config = spec.config()
        validate_config(config)
        scene = build_scene(config)
        train, query = sample_poses(config)
        assert (len(train), len(query)) == (spec.num_train, spec.num_query)
        centres = np.concatenate([train, query])[:, :3, 3]
        assert surface_distance(centres, scene).min() > 0.5, name
        # every view sees the room more than the objects (checked at a small size)
        intrinsics = PinholeIntrinsics.from_fov(40, 30, config.fov_x_deg)
        for c2w in train[::4]:
            origin, dirs, _ = pixel_rays(c2w, intrinsics, 1)
            t, _, material = cast_rays(origin, dirs.reshape(-1, 3), scene)
            assert np.isfinite(t).all() and np.mean(material < NUM_ROOM_FACES) > 0.3, name
    assert family["heldout-room"].config(num_queries=3).num_query == 3
    assert replace(family["heldout-wall"].config(), write_depth=False) == family["heldout-wall"].config(
        write_depth=False
    )


def test_generated_scene_has_novel_view_queries_off_its_training_poses(tmp_path):
    sizes = SceneSizes(num_queries=2, synthetic_size=(40, 30), synthetic_num_train=6)
    scene = prepare_scene("synthetic", tmp_path, tmp_path, sizes, with_novel=True)
    novel, _ = load_query_set(scene.extra_conditions["novel-view"])
    original, _ = load_query_set(scene.query_dir)
    assert len(novel) == 2
    assert all(not np.allclose(n.c2w_gt, o.c2w_gt) for n in novel for o in original)
    assert "novel-view" not in prepare_scene("synthetic", tmp_path / "plain", tmp_path, sizes).extra_conditions


def _ring(elevations_deg, azimuths_deg, radius=4.0):
    """OpenGL cameras on a sphere about the origin, z up, each looking at the origin."""
    poses = []
    for el, az in zip(np.radians(elevations_deg), np.radians(azimuths_deg)):
        centre = radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        back = centre / np.linalg.norm(centre)
        right = np.cross([0.0, 0.0, 1.0], back)
        right /= np.linalg.norm(right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, np.cross(back, right), back], axis=1)
        pose[:3, 3] = centre
        poses.append(pose)
    return np.array(poses)


def test_camera_elevations_azimuths_and_arcs():
    from benchmarks.scenes import azimuth_arc, camera_azimuths_deg, camera_elevations_deg, degrees_outside_arc

    poses = _ring([10.0, 30.0, 60.0, 45.0], [0.0, 90.0, 170.0, -100.0])
    assert camera_elevations_deg(poses) == pytest.approx([10.0, 30.0, 60.0, 45.0])
    assert camera_azimuths_deg(poses, up=(0, 0, 1)) == pytest.approx([0.0, 90.0, 170.0, -100.0])
    even = np.arange(-180.0, 180.0, 45.0)
    assert camera_azimuths_deg(_ring([20.0] * 8, even)) == pytest.approx(even, abs=1e-6)  # mean up z, look-at origin
    # the arc starts after the widest empty gap and may wrap through 180 deg
    assert azimuth_arc([170.0, -170.0, -150.0, 160.0, 0.0], 0.6) == pytest.approx((160.0, 190.0))
    assert degrees_outside_arc([175.0, -175.0, -100.0, 150.0, 90.0], (160.0, 210.0)) == pytest.approx(
        [0, 0, 50, 10, 70]
    )


def test_novel_view_splits_are_named_but_not_run_by_default():
    from benchmarks import scenes

    for name in ("lego-elevation", "fox-arc"):
        assert name in scenes.SCENE_NAMES and name not in scenes.DEFAULT_SCENES and name not in scenes.HELDOUT_SCENES
        assert scenes.expand_scenes([name]) == [name]
    assert scenes.SCENE_TRAIN_ARGS["lego-elevation"] == scenes.SCENE_TRAIN_ARGS["lego"]


def _c2ws(transforms) -> np.ndarray:
    return np.array([f["transform_matrix"] for f in json.loads(transforms.read_text())["frames"]], dtype=np.float64)


@pytest.mark.shared_data
def test_lego_elevation_queries_look_from_below_every_training_view(tmp_path):
    from benchmarks.scenes import SCENE_TRAIN_ARGS, camera_elevations_deg, lego_elevation_split, transforms_extent

    lego = shared_scene("nerf_synthetic_lego")
    every = lego_elevation_split(_c2ws(lego / "transforms_train.json"), _c2ws(lego / "transforms_test.json"))
    assert [len(split) for split in every] == [55, 46]
    sizes = SceneSizes(num_queries=12, lego_size=32)
    scene = prepare_scene("lego-elevation", tmp_path, lego.parent, sizes)
    assert (scene.num_train, scene.num_queries, scene.image_size) == (55, 12, (32, 32))
    train = camera_elevations_deg(_c2ws(scene.train_dir / "transforms.json"))
    query = camera_elevations_deg(_c2ws(scene.query_dir / "transforms.json"))
    print(
        f"lego-elevation: training {train.min():.1f}..{train.max():.1f} deg, queries {query.min():.1f}..{query.max():.1f}"
    )
    assert train.min() >= 30.0 and query.max() < train.min() - 5.0 and query.min() < 10.0
    assert scene.scene_extent == pytest.approx(transforms_extent(scene.train_dir / "transforms.json"))
    assert scene.train_args == SCENE_TRAIN_ARGS["lego"] and scene.protocol == "relative"
    meta = json.loads((scene.query_dir / "transforms.json").read_text())
    image = np.asarray(Image.open(scene.query_dir / meta["frames"][0]["file_path"]))
    assert image.shape == (32, 32, 3) and (image[0, 0] == 255).all()
    stamp = (scene.train_dir / "transforms.json").stat().st_mtime_ns
    assert prepare_scene("lego-elevation", tmp_path, lego.parent, sizes).num_queries == 12
    assert (scene.train_dir / "transforms.json").stat().st_mtime_ns == stamp  # cached by prepared.json


@pytest.mark.shared_data
def test_fox_arc_queries_lie_outside_the_training_arc(tmp_path):
    from benchmarks.scenes import camera_azimuths_deg, fox_arc_split, transforms_extent

    fox = shared_scene("ingp_fox")
    meta = json.loads((fox / "transforms.json").read_text())
    names = [(fox / f).read_text().split() for f in ("split_train.txt", "split_query.txt")]
    by_path = {f["file_path"]: f["transform_matrix"] for f in meta["frames"]}
    poses = [np.array([by_path[n] for n in split], dtype=np.float64) for split in names]
    kept, queries, arc = fox_arc_split(*poses)
    assert (len(kept), len(queries)) == (36, 17) and sum(i >= 50 for i in queries) == 4  # 4 from split_query.txt
    azimuth = dict(zip([f"images/{n[7:11]}.png" for n in names[0] + names[1]], camera_azimuths_deg(np.vstack(poses))))
    scene = prepare_scene("fox-arc", tmp_path, fox.parent, SceneSizes(num_queries=12, fox_downscale=16))
    assert (scene.num_train, scene.num_queries, scene.image_size) == (36, 12, (68, 120))
    train = np.array(
        [azimuth[f["file_path"]] for f in json.loads((scene.train_dir / "transforms.json").read_text())["frames"]]
    )
    qmeta = json.loads((scene.query_dir / "transforms.json").read_text())
    query = np.array([azimuth[f["file_path"]] for f in qmeta["frames"]])
    print(
        f"fox-arc: training {train.min():.1f}..{train.max():.1f} deg (arc {arc[0]:.1f}..{arc[1]:.1f}), queries {query.min():.1f}..{query.max():.1f}"
    )
    assert train.max() - train.min() < 90.0 and (train.min(), train.max()) == pytest.approx(arc)
    assert ((query > train.max() + 5.0) | (query < train.min() - 5.0)).all()
    assert qmeta["k1"] == pytest.approx(0.0578421) and qmeta["fl_x"] == pytest.approx(1375.52 * 68 / 1080)
    assert scene.scene_extent == pytest.approx(transforms_extent(scene.train_dir / "transforms.json"))
