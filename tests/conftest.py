"""Shared test setup: CPU only, no network, and the ../shared/data marker."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _find_shared_data() -> Path:
    """../shared/data beside the checkout, or $CROSSFIRE_SHARED_DATA, or the workplace's /work/shared/data."""
    candidates = [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("CROSSFIRE_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["CROSSFIRE_SHARED_DATA"]))
    return next((c for c in candidates if c.is_dir()), candidates[0])


SHARED_DATA = _find_shared_data()


class NetworkBlocked(RuntimeError):
    """Raised when code under test tries to open a non-loopback connection."""


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", None)


@contextlib.contextmanager
def block_network():
    """Fail any attempt to reach a non-local host (e.g. a weights download) inside the block."""
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise NetworkBlocked(f"network access blocked in tests: {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise NetworkBlocked(f"DNS lookup blocked in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect = real_connect
        socket.getaddrinfo = real_getaddrinfo


@pytest.fixture
def no_network():
    """Fail any attempt to reach a non-local host during the test."""
    with block_network():
        yield


def shared_scene(name: str) -> Path:
    """Path of a scene in ../shared/data, or skip the test with a printed reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared data sets (CI has them)")
    return path


@pytest.fixture(scope="session")
def bundled_scene(tmp_path_factory) -> Path:
    """A small synthetic scene (train views + lighting-changed queries), generated once per session."""
    from crossfire_ns.synthetic import SyntheticSceneConfig, generate_scene

    out = tmp_path_factory.mktemp("scene")
    return generate_scene(out, SyntheticSceneConfig(width=80, height=60, num_train=16, num_query=4, seed=3))


@pytest.fixture(scope="session")
def trained_map(bundled_scene, tmp_path_factory):
    """crossfire-lite trained for a few dozen iterations on the bundled scene, offline, on CPU.

    Returns (config.yml path, tensorboard scalars {tag: [(step, value)]}).
    """
    from tests.helpers import train_lite

    with block_network():
        return train_lite(bundled_scene, tmp_path_factory.mktemp("runs"), iterations=100, loss_start=10)
