"""Shared test setup: CPU only, no network, and the ../shared/data marker."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to open a non-loopback connection."""


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to reach a non-local host (e.g. a weights download)."""
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise NetworkBlocked(f"network access blocked in tests: {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise NetworkBlocked(f"DNS lookup blocked in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield


def shared_scene(name: str) -> Path:
    """Path of a scene in ../shared/data, or skip the test with a printed reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared data sets (CI has them)")
    return path
