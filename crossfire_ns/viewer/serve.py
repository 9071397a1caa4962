"""Start nerfstudio's viewer in this process on a loaded map and return it (``ns-viewer`` blocks forever).

Used by the browser test and by the screenshot script, which then drive the page and read the viewer's state.
``ns-viewer --load-config <run>/config.yml`` is what users run; this is the same ``Viewer`` set up the same way.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np

from crossfire_ns.map import cameras_c2w


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SentFrames:
    """Records the images the viewer sends to its clients, with the output that was selected at the time."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.frames: List[Tuple[str, np.ndarray, float]] = []
        self._lock = threading.Lock()

    def wrap(self, client) -> None:
        original: Callable = client.scene.set_background_image

        def recording(image, *args, **kwargs):
            with self._lock:
                output = self.viewer.control_panel.output_render
                self.frames.append((output, np.array(image, copy=True), time.time()))
            return original(image, *args, **kwargs)

        client.scene.set_background_image = recording

    def last(self, output: Optional[str] = None, since: float = 0.0) -> Optional[np.ndarray]:
        """The last image sent for ``output`` (any output if None) after time ``since``."""
        with self._lock:
            for name, image, stamp in reversed(self.frames):
                if (output is None or name == output) and stamp >= since:
                    return image
        return None


def start_viewer(pipeline, log_dir: Path, port: Optional[int] = None, max_res: int = 256):
    """A running nerfstudio ``Viewer`` on ``pipeline`` (127.0.0.1:``port``) and a ``SentFrames`` recorder.

    Stop it with ``viewer.viser_server.stop()``. ``max_res`` is the viewer's "Max res" (smaller renders faster
    on CPU).
    """
    from nerfstudio.configs.base_config import ViewerConfig
    from nerfstudio.viewer.viewer import Viewer

    config = ViewerConfig(websocket_host="127.0.0.1", websocket_port=port or free_port(), quit_on_train_completion=True)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    viewer = Viewer(
        config,
        log_filename=log_dir / "viewer_log_filename.txt",
        datapath=Path(pipeline.datamanager.get_datapath()),
        pipeline=pipeline,
        train_lock=threading.Lock(),
    )
    recorder = SentFrames(viewer)
    viewer.viser_server.on_client_connect(recorder.wrap)
    viewer.init_scene(
        train_dataset=pipeline.datamanager.train_dataset,
        train_state="completed",
        eval_dataset=pipeline.datamanager.eval_dataset,
    )
    viewer.control_panel._max_res.value = max_res
    viewer.update_scene(step=0)
    return viewer, recorder


def viewer_url(viewer) -> str:
    return f"http://127.0.0.1:{viewer.viser_server.get_port()}"


def look_through_training_camera(viewer, index: int = 0) -> None:
    """Put every connected client's camera at a training camera (pose and field of view)."""
    from crossfire_ns.viewer.cameras import viser_pose

    cameras = viewer.pipeline.datamanager.train_dataset.cameras
    c2w = cameras_c2w(cameras)[index]
    wxyz, position = viser_pose(c2w, 10.0)
    fov = 2.0 * float(np.arctan(float(cameras.height[index]) / (2.0 * float(cameras.fy[index]))))
    for client in viewer.viser_server.get_clients().values():
        with client.atomic():
            client.camera.fov = fov
            client.camera.wxyz = wxyz
            client.camera.position = position


def stop_viewer(viewer, timeout: float = 30.0) -> None:
    """Stop the viser server and wait for the render threads (not daemons) and callback threads to end.

    A render thread still inside torch when the interpreter exits can abort the process ("terminate called
    without an active exception"), so every ``RenderStateMachine`` is joined, including those of clients that have
    already disconnected (the viewer forgets them on disconnect, but a render may still be running).
    """
    from nerfstudio.viewer.render_state_machine import RenderStateMachine

    viewer.viser_server.stop()
    machines = [t for t in threading.enumerate() if isinstance(t, RenderStateMachine)]
    for machine in machines:
        machine.running = False
    for machine in machines:
        machine.join(timeout)
    executor = getattr(viewer.viser_server.gui, "_thread_executor", None)
    if executor is not None:
        executor.shutdown(wait=True)
