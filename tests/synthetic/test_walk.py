"""The smooth camera path (a robot's walk): smooth poses inside the room, ground truth, real motion blur."""

import numpy as np

from crossfire_ns.geometry import c2w_pose_errors
from crossfire_ns.io.queries import load_query_set, read_query_image
from crossfire_ns.synthetic import SyntheticSceneConfig, WalkConfig, generate_walk, walk_poses

SMALL = SyntheticSceneConfig(width=48, height=36, supersample=1, seed=4)


def test_walk_poses_are_smooth_and_stay_in_the_room():
    poses = walk_poses(SyntheticSceneConfig(), WalkConfig(frames=150))
    assert poses.shape == (150, 4, 4)
    steps = [c2w_pose_errors(a, b) for a, b in zip(poses[:-1], poses[1:])]
    moves, turns = np.array([s[0] for s in steps]), np.array([s[1] for s in steps])
    assert moves.max() < 2.5 * np.median(moves) and moves.min() > 0.2 * np.median(moves)  # no jumps, no stops
    assert turns.max() < 3.0  # degrees per frame
    assert (np.abs(poses[:, :3, 3]) < SyntheticSceneConfig().room_half_size - 0.5).all()


def test_walk_is_written_with_ground_truth_and_blur(tmp_path):
    sharp = generate_walk(tmp_path / "sharp", SMALL, WalkConfig(frames=4, arc_deg=60, lighting="train"))
    blurred = generate_walk(
        tmp_path / "blur", SMALL, WalkConfig(frames=4, arc_deg=60, lighting="train", blur_steps=5, shutter=1.0)
    )
    queries, _ = load_query_set(sharp)
    assert [q.file_path for q in queries] == [f"images/frame_{i:04d}.png" for i in range(4)]
    np.testing.assert_allclose(
        np.stack([q.c2w_gt for q in queries]), walk_poses(SMALL, WalkConfig(frames=4, arc_deg=60))
    )
    a = read_query_image(queries[1]).astype(float)
    b = read_query_image(load_query_set(blurred)[0][1]).astype(float)
    sharpness = [np.abs(np.diff(img.mean(-1), axis=1)).mean() for img in (a, b)]
    assert sharpness[1] < 0.9 * sharpness[0]  # motion blur smooths the image along the motion
