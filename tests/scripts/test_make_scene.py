"""crossfire-make-scene: arguments in, a scene folder out."""

import json
from pathlib import Path

from crossfire_ns.scripts.make_scene import main


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_cli_writes_the_scene(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    argv = ["--output-dir", str(out), "--width", "32", "--height", "24", "--num-train", "3", "--num-query", "1"]
    assert main(argv + ["--seed", "2", "--supersample", "1"]) == out
    assert len(_load(out / "transforms.json")["frames"]) == 3
    assert len(_load(out / "queries" / "transforms.json")["frames"]) == 1
    assert _load(out / "scene.json")["config"]["seed"] == 2
    assert "Wrote 3 training views and 1 queries" in capsys.readouterr().out


def test_cli_exposes_the_inside_out_layout_and_depth(tmp_path: Path):
    out = tmp_path / "room"
    argv = ["--output-dir", str(out), "--width", "24", "--height", "18", "--num-train", "3", "--num-query", "1"]
    main(argv + ["--supersample", "1", "--layout", "inside-out", "--write-depth"])
    meta = _load(out / "scene.json")
    assert meta["config"]["layout"] == "inside-out" and meta["config"]["write_depth"] is True
    assert sorted(p.name for p in (out / "depth").iterdir()) == [
        "query_000.npy",
        *(f"train_{i:03d}.npy" for i in range(3)),
    ]
