"""README.md's commands, run as a newcomer runs them, on the test suite's tiny map (issue 38, item 5).

Every line of README.md's ```bash blocks is run as its own process (``make demo``, ``make test`` and ``pip install``
aside), after the placeholders and the demo's paths are replaced by the session's fixtures (``PLACEHOLDERS``); each
must exit 0 and leave what the README says it leaves. A ```console block is a documented error: its ``$`` command
must print the lines under it. The ```python block runs as a script. Nothing here checks accuracy: the map is the
100-iteration ``trained_map`` of conftest.py, so only exit codes and the outputs' presence and format are asserted.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
"""Where ns-train, ns-localize and ns-localize-server live (the virtual environment's bin)."""

EXCLUDED = ("make demo", "make test", "pip install")
"""Set-up commands, not run here: ``make test`` is this suite, ``make demo`` trains a real map (minutes)."""

NOT_RUN = {
    # The viewer serves its web page until stopped; tests/viewer/test_browser.py starts it on the same tiny map and
    # drives the crossfire panel in headless Chromium.
    "ns-viewer": "serves until stopped; tests/viewer/test_browser.py drives it",
    # make lint checks the whole checkout, not a map (and reinstalls .venv when pyproject.toml changed): its result
    # depends on every file of the tree, not on what README says.
    "make lint": "lints the whole checkout, not a map",
}
"""Commands of README's code blocks that are not run, each with the reason."""

PLACEHOLDERS = (
    ("demo_output/runs/demo/crossfire-lite/map", "run"),  # the map make demo trains -> the session's tiny map
    ("demo_output/scene", "scene"),  # make demo's scene -> the tiny map's scene
    ("127.0.0.1:8750", "address"),  # the server's default address -> a free port here
    ("<scene>", "scene"),
    ("<run>", "run"),
    ("<queries>", "queries"),
    ("<out>", "out"),
)
"""README text -> the ``Workspace`` attribute it stands for here (replaced in this order)."""

EXTRA_ARGS = {
    # The README's training command, cut to 2 iterations: what is checked is the command line, the data parsing, the
    # scene-bounds step and the written run; the commands after it use the session's tiny map instead.
    "ns-train": ["--max-num-iterations", "2"],
    # The server listens on a free port here, not on its default 8750 (which another process may hold).
    "ns-localize-server": ["--port", "{port}"],
}
"""Arguments appended to a command here (a command not listed runs exactly as README writes it)."""

SERVER_STARTUP_S = 240.0
"""How long ns-localize-server may take to load the map and build its indexes before /health answers."""


@dataclass
class Block:
    """One fenced code block of README.md."""

    language: str
    text: str
    line: int

    def commands(self) -> List[str]:
        """Its shell lines, backslash continuations joined, comments and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [" ".join(shlex.split(line, comments=True)) for line in joined.splitlines() if line.strip()]


def readme_blocks(text: str) -> List[Block]:
    return [
        Block(m.group(1), m.group(2), text[: m.start()].count("\n") + 1)
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)
    ]


def shell_blocks() -> List[Block]:
    return [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.language in ("bash", "sh", "shell")]


def disposition(command: str) -> str:
    """'excluded', 'not run: <reason>' or 'run'."""
    if command.startswith(EXCLUDED):
        return "excluded"
    for prefix, reason in NOT_RUN.items():
        if command == prefix or command.startswith(prefix + " "):
            return f"not run: {reason}"
    return "run"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Workspace:
    """A folder to run README's commands in, and what their placeholders stand for."""

    cwd: Path
    scene: Path
    run: Path
    out: Path
    port: int

    @property
    def queries(self) -> Path:
        return self.scene / "queries"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def substitute(self, text: str) -> str:
        for placeholder, attribute in PLACEHOLDERS:
            text = text.replace(placeholder, str(getattr(self, attribute)))
        return text

    def argv(self, command: str) -> List[str]:
        argv = [self.substitute(token) for token in shlex.split(command)]
        return argv + [arg.format(port=self.port) for arg in EXTRA_ARGS.get(argv[0], [])]

    def env(self) -> Dict[str, str]:
        return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "200"}

    def run_command(self, argv: List[str], timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def workspace(trained_map, bundled_scene, tmp_path_factory) -> Workspace:
    """A copy of the session's tiny map laid out as ns-train lays out a run (outputs/<experiment>/<method>/<time>/),
    so that the map index ns-localize stores beside it does not touch the other tests' map."""
    config = Path(trained_map[0])
    cwd = tmp_path_factory.mktemp("readme")
    experiment = config.parent.parent.parent
    shutil.copytree(experiment, cwd / "outputs" / experiment.name)
    run = cwd / "outputs" / experiment.name / config.parent.parent.name / config.parent.name
    return Workspace(cwd=cwd, scene=bundled_scene, run=run, out=cwd / "localization", port=free_port())


def _tail(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


def check_outputs(ws: Workspace, argv: List[str], result: subprocess.CompletedProcess) -> None:
    """What README says each command leaves behind."""
    program = argv[0]
    if program == "ns-train":
        data = Path(argv[argv.index("--data") + 1])
        configs = sorted((ws.cwd / "outputs" / data.name / "crossfire-lite").glob("*/config.yml"))
        assert configs, f"ns-train wrote no outputs/{data.name}/crossfire-lite/<timestamp>/config.yml"
        assert list((configs[-1].parent / "nerfstudio_models").glob("*.ckpt")), "ns-train saved no checkpoint"
    elif program == "ns-localize":
        out = Path(argv[argv.index("--output-dir") + 1])
        num_queries = len(json.loads((ws.scene / "queries" / "transforms.json").read_text())["frames"])
        poses = json.loads((out / "poses.json").read_text())
        assert len(poses["frames"]) == num_queries
        assert len(list(csv.DictReader((out / "results.csv").open()))) == num_queries
        assert json.loads((out / "summary.json").read_text())["num_queries"] == num_queries
        for name in ("errors.png", "results_hloc.txt", "trajectory_tum.txt"):
            assert (out / name).is_file(), name
    elif program == "curl":
        answer = json.loads(result.stdout)
        assert answer["status"] in ("localized", "failed", "unreadable"), answer


def wait_for_health(ws: Workspace, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"ns-localize-server exited ({server.returncode}) before answering:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ws.port}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(
        f"ns-localize-server did not answer /health within {SERVER_STARTUP_S:.0f} s:\n{log.read_text()[-3000:]}"
    )


def run_block(ws: Workspace, block: Block) -> List[str]:
    """Run a shell block's commands in order; a server command stays up (on ``ws.port``) for the ones after it."""
    ran, servers = [], []
    try:
        for command in block.commands():
            if disposition(command) != "run":
                continue
            argv = ws.argv(command)
            if shutil.which(argv[0], path=ws.env()["PATH"]) is None:
                pytest.skip(f"README line {block.line}: {argv[0]} is not installed here")
            if argv[0] == "ns-localize-server":
                log = ws.cwd / f"server-{len(servers)}.log"
                with log.open("w") as handle:
                    server = subprocess.Popen(argv, cwd=ws.cwd, env=ws.env(), stdout=handle, stderr=subprocess.STDOUT)
                servers.append(server)
                wait_for_health(ws, server, log)
            else:
                result = ws.run_command(argv)
                assert result.returncode == 0, f"README line {block.line}: {command}\n{_tail(result)}"
                check_outputs(ws, argv, result)
            ran.append(argv[0])
    finally:
        for server in servers:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return ran


BLOCKS = shell_blocks()


def test_readme_has_the_test_command_ci_runs():
    """.ci/run runs ``make test``: the README's test command, a line of its own in a shell block."""
    assert any("make test" in block.text.splitlines() for block in BLOCKS)


def test_every_command_is_run_or_listed_with_its_reason():
    commands = [command for block in BLOCKS for command in block.commands()]
    assert commands, "README.md has no shell commands"
    kinds = {command: disposition(command) for command in commands}
    assert [c for c, kind in kinds.items() if kind == "run"], kinds
    for prefix in NOT_RUN:  # a skip-list entry whose command left the README is stale
        assert any(c == prefix or c.startswith(prefix + " ") for c in commands), f"NOT_RUN lists {prefix!r}"


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if any(disposition(c) == "run" for c in b.commands())],
    ids=lambda b: f"line{b.line}-{b.commands()[0].split()[0]}",
)
def test_readme_shell_block_runs(workspace, block):
    assert run_block(workspace, block)


def test_documented_errors_print_what_readme_says(workspace):
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.language == "console"]
    assert blocks, "README.md documents no error (a ```console block: $ command, then what it prints)"
    for block in blocks:
        lines = block.text.splitlines()
        assert lines[0].startswith("$ "), f"README line {block.line}: a console block starts with '$ command'"
        argv = workspace.argv(lines[0][2:])
        result = workspace.run_command(argv)
        printed = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0, f"README line {block.line}: the documented error did not happen\n{_tail(result)}"
        for expected in lines[1:]:
            assert " ".join(workspace.substitute(expected).split()) in printed, _tail(result)


def test_python_example_runs(workspace):
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.language == "python"]
    assert blocks, "README.md has no Python example"
    for block in blocks:
        result = workspace.run_command([sys.executable, "-c", workspace.substitute(block.text)])
        assert result.returncode == 0, f"README line {block.line}\n{_tail(result)}"
        last = result.stdout.strip().splitlines()[-1]  # what the example prints, after the map's loading messages
        assert last.split()[0] in ("localized", "failed", "unreadable"), _tail(result)
