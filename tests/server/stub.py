"""A stand-in for ``MapLocalizer`` (no map trained, answers fixed) and uvicorn serving an app in a thread."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, List, Optional

import httpx
import numpy as np
from PIL import Image

from crossfire_ns.localize.api import Localization
from crossfire_ns.localize.matchers import PriorMatcherConfig
from crossfire_ns.viewer.serve import free_port

W, H = 80, 60
"""The stub map's training camera."""
TOKEN = "test-token-0123456789abcdef"


class StubCameras(SimpleNamespace):
    def __len__(self) -> int:
        return 1


class StubMap:
    """What the server reads of a map: training cameras, names, the frame change (identity here)."""

    def __init__(self) -> None:
        self.train_cameras = StubCameras(
            width=np.array([W]), height=np.array([H]), fx=np.array([70.0]), fy=np.array([70.0]),
            cx=np.array([W / 2]), cy=np.array([H / 2]),
        )  # fmt: skip
        self.train_c2w = np.eye(4)[None]
        self.config_path = Path("/secret/home/outputs/scene/crossfire-lite/run/config.yml")
        self.checkpoint = Path("/secret/home/outputs/scene/crossfire-lite/run/nerfstudio_models/step-000000100.ckpt")
        self.step = 100
        self.method = "crossfire-lite"

    def to_original(self, c2w: np.ndarray) -> np.ndarray:
        return np.asarray(c2w)


class StubLocalizer:
    """Answers "localized" at the prior (or identity); ``gate`` (when set up) holds each request until released,
    ``crash`` makes the answers internal failures. Records what it was given."""

    def __init__(self, max_image_side: int = 1024) -> None:
        self.map = StubMap()
        self.matcher = PriorMatcherConfig()
        self.max_image_side = max_image_side
        self.gate: Optional[threading.Event] = None
        self.crash = False
        self.delay = 0.0
        """Seconds each answer takes (the curl demonstrations of a queue; tests hold requests with ``gate``)."""
        self.calls: List[dict] = []
        self.ended: List[str] = []

    def localize(self, image, K=None, prior=None, sequence=None, **_kwargs) -> Localization:
        self.calls.append({"shape": np.asarray(image).shape, "K": K, "prior": prior, "sequence": sequence})
        if self.gate is not None:
            assert self.gate.wait(60), "the test never released the gate"
        time.sleep(self.delay)
        if self.crash:
            return Localization("failed", message="RuntimeError: the stub crashed", crashed=True)
        return Localization(
            "localized",
            c2w=np.eye(4) if prior is None else prior,
            num_inliers=50,
            seconds=0.01,
            covariance=np.diag([1e-6] * 3 + [1e-4] * 3),
        )

    def end_sequence(self, sequence: str) -> None:
        self.ended.append(sequence)


def png_bytes(width: int = W, height: int = H, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def image_bytes(fmt: str, width: int = W, height: int = H) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """uvicorn serving ``app`` on a free local port in a thread; yields its URL once /health answers."""
    import uvicorn

    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code in (200, 503):
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        instance.should_exit = True
        thread.join(timeout=30)


def main() -> None:
    """The app on a stub localizer on 127.0.0.1:8750 (a token from CROSSFIRE_SERVER_TOKEN if set, each answer taking
    STUB_SECONDS): the server's limits, tokens and answers to try with curl without a trained map."""
    import os

    import uvicorn

    from crossfire_ns.server.app import create_app
    from crossfire_ns.server.guard import LOOPBACK_HOSTS

    stub = StubLocalizer()
    stub.delay = float(os.environ.get("STUB_SECONDS", "0"))
    app = create_app(stub, token=os.environ.get("CROSSFIRE_SERVER_TOKEN"), allowed_hosts=LOOPBACK_HOSTS)
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8750")), limit_concurrency=20)


if __name__ == "__main__":
    main()
