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
