"""ns-localize-server as its own process for the benchmarks: started on a free local port, ready when /health is."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence, Tuple

import httpx

from crossfire_ns.viewer.serve import free_port


@contextlib.contextmanager
def running_server(load_config: Path, *args: str) -> Iterator[Tuple[subprocess.Popen, str]]:
    """``(process, url)`` of ``ns-localize-server --load-config load_config *args`` once it answers /health; the
    server is stopped on exit. ``SystemExit`` if it ends before it is ready."""
    port = free_port()
    command: Sequence[str] = [sys.executable, "-m", "crossfire_ns.scripts.server", "--load-config", str(load_config)]
    server = subprocess.Popen(
        [*command, "--port", str(port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode} before it was ready")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield server, url
    finally:
        server.terminate()
        server.wait(timeout=30)
