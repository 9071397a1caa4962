"""Queries from viewpoints no training camera took: off the capture path, clear of surfaces, with ground truth."""

import numpy as np
import pytest

from crossfire_ns.io.queries import load_query_set
from crossfire_ns.synthetic import (
    NovelViewConfig,
    SyntheticSceneConfig,
    build_scene,
    generate_novel_views,
    novel_view_poses,
    sample_poses,
    surface_distance,
)


@pytest.mark.parametrize("layout", ["orbit", "inside-out"])
def test_novel_viewpoints_lie_outside_the_capture_path(layout):
    config = SyntheticSceneConfig(layout=layout, seed=3)
    novel = NovelViewConfig(views=24)
    train, _ = sample_poses(config)
    poses = novel_view_poses(config, novel)
    assert poses.shape == (24, 4, 4)
    np.testing.assert_allclose(
        poses[:, :3, :3] @ poses[:, :3, :3].transpose(0, 2, 1), np.eye(3)[None].repeat(24, 0), atol=1e-9
    )
    radius = np.linalg.norm(poses[:, :2, 3], axis=1)
    train_radius = np.linalg.norm(train[:, :2, 3], axis=1)
    if layout == "inside-out":  # farther from the axis than any training camera for most views
        assert np.mean(radius > train_radius.max()) > 0.4
    else:  # alternately inside and outside the training ring
        assert (radius[0::2] < train_radius.min()).all() and (radius[1::2] > train_radius.max()).all()
    heights, train_heights = poses[:, 2, 3], train[:, 2, 3]
    assert heights.min() < train_heights.min() or heights.max() > train_heights.max()
    np.testing.assert_array_equal(poses, novel_view_poses(config, novel))  # deterministic
    assert not np.allclose(poses, novel_view_poses(config, NovelViewConfig(views=24, seed=1)))


def test_novel_views_are_written_clear_of_surfaces(tmp_path):
    config = SyntheticSceneConfig(width=40, height=30, supersample=1, seed=2, layout="inside-out", write_depth=True)
    novel = NovelViewConfig(views=3, min_clearance=0.5)
    out = generate_novel_views(tmp_path / "novel", config, novel)
    queries, _ = load_query_set(out)
    assert [q.file_path for q in queries] == [f"images/novel_{i:03d}.png" for i in range(3)]
    poses = np.stack([q.c2w_gt for q in queries])
    assert (surface_distance(poses[:, :3, 3], build_scene(config)) >= 0.5).all()
    depth = np.load(out / "depth" / "novel_000.npy")
    assert depth.shape == (30, 40) and np.isfinite(depth).all() and depth.min() > 0.4


def test_novel_views_reject_an_impossible_clearance(tmp_path):
    with pytest.raises(ValueError, match="clearance"):
        generate_novel_views(
            tmp_path / "n", SyntheticSceneConfig(width=8, height=6), NovelViewConfig(views=1, min_clearance=10.0)
        )
