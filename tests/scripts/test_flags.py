"""Flags of ns-localize and ns-localize-server are checked at start: a bad one is an error naming it with a non-zero
exit, before any map is loaded; a server beyond this machine needs a token."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.scripts.localize import Localize, check_priors
from crossfire_ns.scripts.server import MIN_TOKEN_CHARS, TOKEN_ENV, Serve, ServerSetupError, is_loopback, read_token

TOKEN = "t" * MIN_TOKEN_CHARS


def _localize(tmp_path: Path, **flags) -> Localize:
    return Localize(load_config=tmp_path / "never-read.yml", query_dir=tmp_path, output_dir=tmp_path / "out", **flags)


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"fx": math.nan}, "--fx nan"),
        ({"fx": -5.0}, "--fx -5.0"),
        ({"fx": 100.0, "fy": math.inf}, "--fy inf"),
        ({"fx": 100.0, "cx": math.nan}, "--cx nan"),
        ({"cy": 10.0}, "need --fx"),
        ({"max_queries": -1}, "--max-queries -1"),
        ({"max_queries": 0}, "--max-queries 0"),
        ({"max_image_side": 0}, "--max-image-side 0"),
        ({"scene_extent": math.nan}, "--scene-extent nan"),
        ({"recall_thresholds": ((0.05, -1.0),)}, "--recall-thresholds"),
        ({"poses_file": Path("p.txt")}, "--poses-file"),
    ],
)
def test_a_bad_localize_flag_is_named_and_exits_2_before_the_map(tmp_path, capsys, flags, words):
    command = _localize(tmp_path, **flags)
    assert any(words in problem for problem in command.check())
    assert command.main() == 2  # the config does not exist: the flags were refused before it was looked for
    out = capsys.readouterr().out.replace("\n", "")
    assert words in out and "never-read" not in out and not (tmp_path / "out").exists()


def test_good_localize_flags_pass(tmp_path):
    assert _localize(tmp_path, fx=100.0, fy=101.0, cx=40.0, cy=30.0, max_queries=1).check() == []
    assert _localize(tmp_path, prior="poses", poses_file=Path("p.txt")).check() == []


def test_priors_must_be_rigid(tmp_path):
    check_priors({"a.png": np.eye(4)}, tmp_path / "p.json")
    with pytest.raises(CrossfireInputError, match="p.json: 'b.png': the rotation part is not a rotation"):
        check_priors({"a.png": np.eye(4), "b.png": np.diag([2.0, 2.0, 2.0, 1.0])}, tmp_path / "p.json")


def test_the_command_line_refuses_nan_with_a_nonzero_exit(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "crossfire_ns.scripts.localize", "--load-config", str(tmp_path / "c.yml"),
         "--query-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--fx", "nan", "--max-queries", "-1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--fx nan" in done.stdout and "--max-queries -1" in done.stdout


def _serve(tmp_path: Path, **flags) -> Serve:
    return Serve(load_config=tmp_path / "never-read.yml", **flags)


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"port": 70000}, "--port 70000"),
        ({"queue_size": 0}, "--queue-size 0"),
        ({"max_upload_bytes": -1}, "--max-upload-bytes -1"),
        ({"max_image_side": 0}, "--max-image-side 0"),
        ({"max_image_pixels": 0}, "--max-image-pixels 0"),
        ({"body_timeout": math.inf}, "--body-timeout inf"),
        ({"map": ["floor2"]}, "--map floor2: must be NAME=RUN/config.yml"),
        ({"map": ["a b=x/config.yml"]}, "--map a b=x/config.yml: a name is"),
        ({"map": ["default=x/config.yml"]}, "the name 'default' is given twice"),
        ({"map_root": Path("/nonexistent-root")}, "--map-root /nonexistent-root: not a folder"),
    ],
)
def test_a_bad_server_flag_is_named_and_exits_2(tmp_path, capsys, flags, words):
    assert _serve(tmp_path, **flags).main() == 2
    assert words in capsys.readouterr().out.replace("\n", "")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "robot.local"])
def test_serving_beyond_this_machine_without_a_token_refuses_to_start(tmp_path, capsys, monkeypatch, host):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert _serve(tmp_path, host=host).main() == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert f"--host {host}" in out and TOKEN_ENV in out and "--token-file" in out and "never-read" not in out


def test_with_a_token_the_host_is_accepted_and_the_map_is_looked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert _serve(tmp_path, host="0.0.0.0").main() == 2  # now it got as far as the (missing) config
    assert "never-read.yml" in capsys.readouterr().out.replace("\n", "")


def test_without_any_map_or_with_a_map_root_but_no_token_the_server_refuses_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert Serve().main() == 2
    assert "no map: give --load-config" in capsys.readouterr().out.replace("\n", "")
    assert _serve(tmp_path, map_root=tmp_path).main() == 2
    out = capsys.readouterr().out.replace("\n", "")
    assert "--map-root lets clients load maps" in out and "never-read" not in out


def test_maps_of_the_command_line_are_named_in_order(tmp_path):
    serve = _serve(tmp_path, map=["floor2=b/config.yml", "roof=c/config.yml"], map_name="lobby")
    assert serve.check() == []
    assert serve.configs() == [
        ("lobby", tmp_path / "never-read.yml"), ("floor2", Path("b/config.yml")), ("roof", Path("c/config.yml"))
    ]  # fmt: skip


def test_tokens(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert read_token(None) is None
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    assert read_token(None) == TOKEN
    (tmp_path / "token").write_text("f" * MIN_TOKEN_CHARS + "\n")
    assert read_token(tmp_path / "token") == "f" * MIN_TOKEN_CHARS  # the file wins
    for bad in ("short", "has a space in it somewhere"):
        (tmp_path / "token").write_text(bad)
        with pytest.raises(ServerSetupError, match="--token-file .*at least 16 printable characters"):
            read_token(tmp_path / "token")
    with pytest.raises(ServerSetupError, match="cannot be read"):
        read_token(tmp_path / "missing")


def test_loopback():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "robot.local"))
