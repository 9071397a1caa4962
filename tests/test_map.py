"""CrossfireMap: one way to load a trained map, with the data's frame normalisation and training views."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.map import (
    CrossfireMap,
    MapLoadError,
    check_checkpoint,
    checkpoint_sha256,
    latest_checkpoint,
    load_map,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(trained_map):
    return load_map(trained_map[0])


def test_loaded_map_has_pipeline_frame_and_training_views(loaded, trained_map, bundled_scene):
    assert isinstance(loaded, CrossfireMap) and loaded.config_path == trained_map[0]
    assert loaded.step is not None and loaded.checkpoint.suffix == ".ckpt" and loaded.method == "crossfire-lite"
    frames = json.loads((bundled_scene / "transforms.json").read_text())["frames"]
    assert loaded.train_c2w.shape == (len(loaded.train_dataset), 4, 4) and len(loaded.train_dataset) <= len(frames)
    original = loaded.to_original(loaded.train_c2w)  # the training poses as transforms.json gives them
    by_name = {f["file_path"]: np.asarray(f["transform_matrix"]) for f in frames}
    names = [p.relative_to(bundled_scene).as_posix() for p in loaded.train_dataset.image_filenames]
    np.testing.assert_allclose(original, np.stack([by_name[n] for n in names]), atol=1e-4)
    np.testing.assert_allclose(loaded.to_normalized(original), loaded.train_c2w, atol=1e-5)
    centres = original[:, :3, 3]
    assert loaded.camera_extent() == pytest.approx(np.linalg.norm(centres.max(0) - centres.min(0)), rel=1e-5)
    image = loaded.training_image(0)
    assert image.shape[:2] == (60, 80) and float(image.max()) <= 1.0
    K = loaded.training_intrinsics(40, 30)
    meta = json.loads((bundled_scene / "transforms.json").read_text())
    assert K[0, 0] == pytest.approx(meta["fl_x"] / 2) and K[1, 2] == pytest.approx(meta["cy"] / 2)


def test_things_built_for_a_map_are_built_once(loaded):
    built = []
    first = loaded.cached(("probe", 1), lambda: built.append(1) or object())
    assert loaded.cached(("probe", 1), lambda: built.append(1) or object()) is first and built == [1]


def test_missing_config_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(MapLoadError, match="ns-train") as err:
        load_map(tmp_path / "nope" / "config.yml")
    assert "nope/config.yml" in str(err.value) and isinstance(err.value, CrossfireInputError)


def test_a_run_without_checkpoints_is_a_clear_error(trained_map, tmp_path):
    experiment = trained_map[0].parents[2]  # <experiment>/<method>/<timestamp>/config.yml
    shutil.copytree(experiment, tmp_path / experiment.name)
    run = tmp_path / trained_map[0].relative_to(experiment.parent).parent
    for checkpoint in (run / "nerfstudio_models").glob("*.ckpt"):
        checkpoint.unlink()
    with pytest.raises(MapLoadError, match="no checkpoint"):
        load_map(run / "config.yml")


def test_moved_training_data_is_a_clear_error(trained_map, tmp_path):
    with pytest.raises(MapLoadError, match="--data"):
        load_map(trained_map[0], data=tmp_path / "moved-away")


def _checkpoint(path, step: int) -> None:
    """A small checkpoint in torch.save's format, as ns-train writes it."""
    torch.save({"step": step, "pipeline": {"weight": torch.arange(1000.0)}}, path)


def test_an_empty_or_truncated_checkpoint_is_a_clear_error_naming_it_and_the_previous_one(tmp_path):
    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    _checkpoint(models / "step-000000050.ckpt", 50)
    latest = models / "step-000000100.ckpt"
    _checkpoint(latest, 100)
    assert latest_checkpoint(models) == latest
    check_checkpoint(latest)  # whole: no error
    whole = latest.read_bytes()
    for damaged, what in ((b"", "empty"), (whole[: len(whole) // 2], "cut short"), (whole[:-1], "cut short")):
        latest.write_bytes(damaged)
        with pytest.raises(MapLoadError, match=what) as err:
            check_checkpoint(latest)
        assert str(latest) in str(err.value) and "step-000000050.ckpt" in str(err.value)
    (models / "step-000000050.ckpt").unlink()
    with pytest.raises(MapLoadError, match="no earlier checkpoint") as err:
        check_checkpoint(latest)
    assert str(latest) in str(err.value)


def test_a_checkpoint_is_hashed_once_per_process_and_again_when_replaced(tmp_path, monkeypatch):
    import hashlib

    import crossfire_ns.map as module

    path = tmp_path / "step-000000001.ckpt"
    path.write_bytes(b"weights A" * 10_000)
    made = []
    real = hashlib.sha256
    monkeypatch.setattr(module.hashlib, "sha256", lambda *a: made.append(1) or real(*a))
    first = checkpoint_sha256(path)
    assert first == real(path.read_bytes()).hexdigest() and checkpoint_sha256(path) == first and len(made) == 1
    replacement = tmp_path / "new"
    replacement.write_bytes(b"weights B" * 10_000)
    os.replace(replacement, path)  # same name and size, other content
    assert checkpoint_sha256(path) == real(b"weights B" * 10_000).hexdigest() and len(made) == 2


def test_a_truncated_checkpoint_of_a_map_is_a_clear_error(trained_map, tmp_path):
    experiment = trained_map[0].parents[2]
    shutil.copytree(experiment, tmp_path / experiment.name)
    run = tmp_path / trained_map[0].relative_to(experiment.parent).parent
    latest = latest_checkpoint(run / "nerfstudio_models")
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(MapLoadError, match="cut short") as err:
        load_map(run / "config.yml")
    assert latest.name in str(err.value)
