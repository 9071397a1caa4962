"""Running a step's command with its output in a log file, an optional time limit and a progress callback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

TIMEOUT_CODE = 124
"""Exit code reported for a command stopped at its time limit (as coreutils' timeout)."""


def run_logged(
    command: Sequence[str],
    log: Path,
    timeout_s: Optional[float] = None,
    poll: Optional[Callable[[], None]] = None,
    cwd: Optional[Path] = None,
) -> int:
    """Run ``command`` with stdout and stderr appended to ``log``; returns its exit code.

    The command runs in its own process group, so that a time limit (``timeout_s``) or an interruption of the
    benchmark stops it and everything it started. ``poll`` is called about once a second while it runs.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("\n$ " + " ".join(str(c) for c in command) + "\n")
        handle.flush()
        process = subprocess.Popen(
            [str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        start = time.monotonic()
        try:
            while True:
                try:
                    return process.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    if poll is not None:
                        poll()
                    if timeout_s is not None and time.monotonic() - start > timeout_s:
                        _stop(process)
                        handle.write(f"\n[benchmarks] stopped after {timeout_s:.0f} s (time limit)\n")
                        return TIMEOUT_CODE
        except BaseException:
            _stop(process)
            raise


def _stop(process: subprocess.Popen) -> None:
    """Terminate the process group, then kill it if it does not go within 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
