"""examples/robot_client.py against the server on a stub localizer, over real HTTP: every frame sent in order with the
sequence id, each answer printed as a JSON line with its pose and covariance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from crossfire_ns.server.app import create_app
from tests.server.stub import TOKEN, H, StubLocalizer, W, png_bytes, serving

CLIENT = Path(__file__).resolve().parents[2] / "examples" / "robot_client.py"


def _run_client(url: str, folder: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CROSSFIRE_SERVER_TOKEN": TOKEN}
    intrinsics = ["--fx", "70", "--fy", "70", "--cx", str(W / 2), "--cy", str(H / 2)]
    return subprocess.run(
        [sys.executable, str(CLIENT), str(folder), "--url", url, *intrinsics, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_the_robot_client_sends_a_folder_as_one_sequence_and_prints_pose_and_covariance(tmp_path):
    for name in ("frame_002.png", "frame_000.png", "frame_001.png", "notes.txt"):
        (tmp_path / name).write_bytes(png_bytes() if name.endswith(".png") else b"not a frame")
    lobby, floor2 = StubLocalizer(), StubLocalizer()
    app = create_app(lobby, token=TOKEN, more_maps={"floor2": floor2})
    with serving(app) as url:
        done = _run_client(url, tmp_path, "--sequence", "robot-7")
        named = _run_client(url, tmp_path, "--map", "floor2", "--max-frames", "1")
        refused = subprocess.run(
            [sys.executable, str(CLIENT), str(tmp_path), "--url", url],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "CROSSFIRE_SERVER_TOKEN"},
        )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["file"] for line in lines] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert [line["frame"] for line in lines] == [0, 1, 2]
    assert all(line["status"] == "localized" and line["map"] == "default" for line in lines)
    assert [call["sequence"] for call in lobby.calls] == ["robot-7"] * 3
    np.testing.assert_allclose(lobby.calls[0]["K"], [[70, 0, W / 2], [0, 70, H / 2], [0, 0, 1]])
    first = lines[0]
    assert np.asarray(first["covariance"]).shape == (6, 6) and first["centre"] == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(first["sigma_centre"], [0.01] * 3)
    np.testing.assert_allclose(first["sigma_rotation_deg"], [np.degrees(1e-3)] * 3)
    assert named.returncode == 0 and json.loads(named.stdout.splitlines()[0])["map"] == "floor2"
    assert len(named.stdout.splitlines()) == 1 and len(floor2.calls) == 1
    assert refused.returncode == 1  # without the token every frame is a 401, said on each line
    assert all(json.loads(line)["status"] == "http 401" for line in refused.stdout.splitlines())
