"""The machine and software a benchmark ran on: cores, CPU model, memory, GPU, versions, commit."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional

PACKAGES = ("torch", "nerfstudio", "pycolmap", "opencv-python-headless", "numpy", "tyro")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cuda_device() -> Optional[str]:
    """Name of the first CUDA device, or None (CUDA_VISIBLE_DEVICES="" hides them)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info() -> Dict[str, Any]:
    """JSON-ready description of this machine and the software versions."""
    import torch

    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": cores,
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "gpu": cuda_device(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
