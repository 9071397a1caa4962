"""The pose-identity check: identical records pass, one changed pose or figure is reported."""

import json

from benchmarks.same_poses import Compare


def _record(path, c2w, figure=1.0):
    rows = [{"dir": "q", "file": "a.png", "status": "localized", "c2w": c2w, "seconds": 0.5,
             "diagnostics": {"refine_ratio": figure}}]  # fmt: skip
    path.write_text(json.dumps(rows))
    return path


def test_identical_records_pass_and_a_changed_pose_fails(tmp_path, capsys):
    pose = [[1.0, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    old = _record(tmp_path / "old.json", pose)
    assert Compare([old, _record(tmp_path / "same.json", pose)]).main() == 0
    moved = [row[:] for row in pose]
    moved[0][3] = 0.1000000001
    assert Compare([old, _record(tmp_path / "moved.json", moved)]).main() == 1
    Compare([old, _record(tmp_path / "figure.json", pose, figure=0.9)]).main()
    assert "refine_ratio differs" in capsys.readouterr().out
