"""Step: train one crossfire map per scene with the real ``ns-train`` command, or reuse a finished one.

A map is identified by everything that shapes it (method, iterations, device, extra arguments and the content
of the training transforms.json): the folder name carries a hash of those, so a re-run with the same settings
finds the finished map (``train_meta.json`` + a checkpoint) and skips training, and a run with other settings
trains a new one beside it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from benchmarks.process import TIMEOUT_CODE, run_logged
from crossfire_ns.io.atomic import write_json_atomic

NEVER = str(10**9)
"""Step interval that never comes: evaluation during training is switched off (it would only cost time)."""


@dataclass(frozen=True)
class TrainSpec:
    """One map to train."""

    scene: str
    """Scene name (the experiment name of the run)."""
    data: Path
    """Training folder (transforms.json)."""
    method: str = "crossfire-lite"
    """ns-train method."""
    iterations: int = 1500
    """--max-num-iterations."""
    device_type: str = "cpu"
    """--machine.device-type (cpu or cuda)."""
    extra_args: Tuple[str, ...] = ()
    """More trainer arguments (before the dataparser subcommand)."""

    def key(self) -> str:
        """Short hash of the settings and of the training transforms.json's content."""
        content = hashlib.sha256((Path(self.data) / "transforms.json").read_bytes()).hexdigest()
        text = json.dumps({**asdict(self), "data": content}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class TrainResult:
    """A finished (or failed) map."""

    config: Optional[Path]
    """config.yml of the map; None if training failed."""
    seconds: Optional[float]
    """Wall time of the ns-train command that made it (start-up and checkpointing included)."""
    cached: bool
    """True when an earlier run's map was reused."""
    message: str = ""
    log: Optional[Path] = None


def train_command(spec: TrainSpec, output_dir: Path, timestamp: str) -> List[str]:
    """The ns-train command line (as ``crossfire_ns.scripts.demo`` runs it), with evaluation during training off."""
    ns_train = str(Path(sys.executable).parent / "ns-train")
    return [
        ns_train, spec.method, "--data", str(spec.data),
        "--output-dir", str(output_dir), "--experiment-name", spec.scene, "--timestamp", timestamp,
        "--machine.device-type", spec.device_type, "--vis", "tensorboard",
        "--viewer.quit-on-train-completion", "True",
        "--max-num-iterations", str(spec.iterations), "--steps-per-save", str(spec.iterations),
        "--steps-per-eval-batch", NEVER, "--steps-per-eval-image", NEVER, "--steps-per-eval-all-images", NEVER,
        *spec.extra_args,
        "nerfstudio-data", "--eval-mode", "all",
    ]  # fmt: skip


def map_dir(spec: TrainSpec, maps_root: Path) -> Path:
    """Where ns-train puts the map: ``maps_root/<scene>/<method>/<key>``."""
    return Path(maps_root) / spec.scene / spec.method / spec.key()


def finished_map(folder: Path) -> Optional[dict]:
    """train_meta.json of a finished map in ``folder`` (with config.yml and a checkpoint), else None."""
    meta_file = folder / "train_meta.json"
    if not (meta_file.is_file() and (folder / "config.yml").is_file()):
        return None
    if not any((folder / "nerfstudio_models").glob("*.ckpt")):
        return None
    meta = json.loads(meta_file.read_text())
    return meta if meta.get("status") == "ok" else None


def train_map(
    spec: TrainSpec, maps_root: Path, retrain: bool = False, timeout_s: Optional[float] = None, poll=None
) -> TrainResult:
    """Train (or reuse) the map of ``spec``; output goes to ``<key>.train.log`` beside it. Never raises on a
    failed run; ``timeout_s`` stops a run that takes longer, ``poll`` is called about once a second."""
    folder = map_dir(spec, maps_root)
    log = folder.parent / f"{folder.name}.train.log"
    meta = None if retrain else finished_map(folder)
    if meta is not None:
        return TrainResult(folder / "config.yml", meta["seconds"], True, "reused", log)
    command = train_command(spec, maps_root, folder.name)
    log.unlink(missing_ok=True)
    start = time.perf_counter()
    code = run_logged(command, log, timeout_s, poll=poll)
    seconds = time.perf_counter() - start
    ok = code == 0 and (folder / "config.yml").is_file() and any((folder / "nerfstudio_models").glob("*.ckpt"))
    write_json_atomic(
        folder / "train_meta.json",
        {
            "status": "ok" if ok else "failed",
            "seconds": seconds,
            "return_code": code,
            "spec": asdict(spec),
            "command": command,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    if not ok:
        why = f"stopped at the time limit ({seconds:.0f} s)" if code == TIMEOUT_CODE else f"ns-train exited with {code}"
        return TrainResult(None, seconds, False, f"{why}; see {log}", log)
    return TrainResult(folder / "config.yml", seconds, False, "trained", log)


def log_tail(path: Optional[Path], lines: int = 15) -> str:
    """The last lines of a log file (for error messages)."""
    if path is None or not Path(path).is_file():
        return ""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def last_train_step(log: Path) -> Optional[int]:
    """The last step ns-train reported in its log ("400 (40.00%) ..." lines), or None."""
    import re

    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 4096))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    steps = re.findall(r"(?m)^\s*(\d+) \(\d+\.\d+%\)", tail)
    return int(steps[-1]) if steps else None
