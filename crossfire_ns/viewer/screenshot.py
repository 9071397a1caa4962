"""The crossfire viewer driven in headless Chromium the way a user sees it: ``ViewerSession``.

It starts the viewer on a map (in this process), opens it in headless Chromium and uses the page (mouse clicks on
the output dropdown and in the 3D view). The browser test and ``python -m crossfire_ns.scripts.viewer_screenshots``
(the README screenshots) use it.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from crossfire_ns.map import cameras_c2w
from crossfire_ns.viewer.browser import HeadlessChromium
from crossfire_ns.viewer.serve import look_through_training_camera, start_viewer, stop_viewer, viewer_url

CONTROL_LABELS = ("Refresh descriptor PCA", "Pick similarity reference", "Load localized cameras")
"""Button labels of the crossfire controls, as the page shows them."""


class ViewerSession:
    """A viewer on a loaded map, opened in headless Chromium; methods act through the page like a user does."""

    def __init__(
        self,
        pipeline,
        chromium: str,
        width: int = 1200,
        height: int = 800,
        max_res: int = 128,
        timeout: float = 60.0,
    ) -> None:
        self.pipeline = pipeline
        self.timeout = timeout
        self.max_res = max_res
        self._log_dir = Path(tempfile.mkdtemp(prefix="crossfire-viewer-"))
        self.viewer, self.frames = start_viewer(pipeline, self._log_dir, max_res=max_res)
        self.tools = pipeline.model.crossfire_viewer
        self.browser: Optional[HeadlessChromium] = None
        try:
            self.browser = HeadlessChromium(chromium, width, height)
            self.browser.goto(viewer_url(self.viewer))
            self.browser.wait_for(
                lambda: all(label in self.browser.text() for label in CONTROL_LABELS), timeout, "the crossfire controls"
            )
            self.browser.wait_for(lambda: self.viewer.viser_server.get_clients(), timeout, "the page to connect")
        except BaseException:
            self.close()
            raise

    def look_through_training_camera(self, index: int = 0, hide_training_cameras: bool = True) -> None:
        look_through_training_camera(self.viewer, index)
        self.viewer.set_camera_visibility(not hide_training_cameras)

    def view_from_behind_training_camera(self, index: int = 0, back: float = 0.6, fov_deg: float = 80.0) -> None:
        """Look the way a training camera looks, from ``back`` times its distance to the middle of the training
        cameras further back, with a wide field of view: the cameras across the scene are in view, and the map is
        seen from a direction it was trained on."""
        from crossfire_ns.viewer.cameras import viser_pose

        cameras = self.pipeline.datamanager.train_dataset.cameras
        centres = cameras.camera_to_worlds[:, :3, 3].cpu().numpy()
        c2w = cameras_c2w(cameras)[index]
        distance = float(np.linalg.norm(c2w[:3, 3] - centres.mean(axis=0)))
        c2w[:3, 3] += back * distance * c2w[:3, 2]  # OpenGL: +z points backwards
        wxyz, position = viser_pose(c2w, 10.0)
        for client in self.viewer.viser_server.get_clients().values():
            with client.atomic():
                client.camera.fov = float(np.radians(fov_deg))
                client.camera.wxyz = wxyz
                client.camera.position = position

    def park_mouse(self) -> None:
        """Move the mouse over the 3D view's corner, so no tooltip of the control panel is open."""
        left, top, _, _ = self.browser.canvas_box()
        self.browser.send("Input.dispatchMouseEvent", type="mouseMoved", x=left + 2, y=top + 2)

    def _output_dropdown(self) -> Optional[Tuple[float, float]]:
        """Centre of the "Output type" dropdown: the input that shows the current output."""
        current = json.dumps(self.viewer.control_panel.output_render)
        return self.browser.evaluate(
            "(() => { const i = [...document.querySelectorAll('input')].find(e => e.value === " + current + ");"
            " if (!i) return null; const r = i.getBoundingClientRect();"
            " return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()"
        )

    def _option(self, name: str) -> Optional[Tuple[float, float]]:
        return self.browser.evaluate(
            "(() => { const o = [...document.querySelectorAll('[role=option]')]"
            ".find(e => e.innerText.trim() === " + json.dumps(name) + ");"
            " if (!o) return null; const r = o.getBoundingClientRect();"
            " return r.width > 0 ? [r.x + r.width / 2, r.y + r.height / 2] : null; })()"
        )

    def select_output(self, name: str, attempts: int = 4) -> None:
        """Choose ``name`` in the "Output type" dropdown with the mouse (retried: the list is rebuilt when a frame
        brings new outputs)."""
        for _ in range(attempts):
            if self.viewer.control_panel.output_render == name:
                return
            box = self.browser.wait_for(self._output_dropdown, self.timeout, "the output dropdown")
            self.browser.click(*box)
            try:
                option = self.browser.wait_for(lambda: self._option(name), 5, f"the option {name}")
            except TimeoutError:
                continue
            self.browser.click(*option)
            try:
                self.browser.wait_for(lambda: self.viewer.control_panel.output_render == name, 5, "the selection")
            except TimeoutError:
                continue
        if self.viewer.control_panel.output_render != name:
            raise TimeoutError(f"could not select the output {name} in the page")

    def wait_for_frame(self, output: str, since: float, min_size: Optional[int] = None) -> np.ndarray:
        """The first frame of ``output`` sent after ``since`` whose larger side is at least ``min_size`` pixels
        (default: the viewer's max res, i.e. the full-resolution render after the camera stops)."""
        min_size = self.max_res if min_size is None else min_size

        def ready():
            image = self.frames.last(output, since)
            return image is not None and max(image.shape[:2]) >= min_size

        self.browser.wait_for(ready, self.timeout, f"a {output} frame of {min_size} px")
        time.sleep(1.0)  # the page decodes and draws the frame
        return self.frames.last(output, since)

    def pick_reference(self, x: float = 0.5, y: float = 0.5) -> None:
        """Press "Pick similarity reference", then click the 3D view at (x, y), fractions of the canvas."""
        self.browser.click_button("Pick similarity reference")
        self.browser.wait_for(
            lambda: "Click a point in the scene" in self.browser.text(), self.timeout, "the picking prompt"
        )
        left, top, width, height = self.browser.canvas_box()
        previous = self.tools.reference
        self.browser.click(left + x * width, top + y * height)
        self.browser.wait_for(lambda: self.tools.reference is not previous, self.timeout, "the reference descriptor")

    def load_cameras(self, poses_file: Path, query_dir: Optional[Path] = None) -> str:
        """Fill in the poses.json and query-folder fields, press "Load localized cameras"; the summary it shows."""
        self.tools.l1_poses_file.value = str(poses_file)
        self.tools.l2_query_dir.value = "" if query_dir is None else str(query_dir)
        self.browser.wait_for(
            lambda: self.browser.evaluate(
                "[...document.querySelectorAll('input')].some(e => e.value === " + json.dumps(str(poses_file)) + ")"
            ),
            self.timeout,
            "the poses.json field",
        )
        self.browser.click_button("Load localized cameras")
        return self.browser.wait_for(
            lambda: next((line for line in self.browser.text().splitlines() if "estimates," in line), None),
            self.timeout,
            "the localized cameras summary",
        )

    def screenshot(self) -> Tuple[bytes, np.ndarray]:
        """(PNG bytes of the page, RGB array of the 3D view's canvas)."""
        from PIL import Image

        self.park_mouse()
        time.sleep(0.3)
        png = self.browser.screenshot()
        page = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        left, top, width, height = self.browser.canvas_box()
        return png, page[top : top + height, left : left + width]

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        stop_viewer(self.viewer)
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def __enter__(self) -> "ViewerSession":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def displayed_difference(canvas: np.ndarray, frame: np.ndarray) -> float:
    """Mean absolute difference (0-255) between the 3D view and ``frame``, the image the viewer sent.

    viser draws the frame over the part of the canvas left of the control panel (the camera's aspect excludes the
    panel), full height: that part is ``height * frame aspect`` wide, and the frame is scaled to it.
    """
    from PIL import Image

    height, width = canvas.shape[:2]
    shown_width = min(width, max(1, round(height * frame.shape[1] / frame.shape[0])))
    shown = np.asarray(Image.fromarray(frame).resize((shown_width, height), Image.BILINEAR)).astype(np.float32)
    return float(np.abs(canvas[:, :shown_width].astype(np.float32) - shown).mean())


def is_blank(image: np.ndarray, min_std: float = 8.0, min_colours: int = 64) -> bool:
    """True when an RGB image is (nearly) uniform: little spread or few distinct colours."""
    colours = len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))
    return float(image.std()) < min_std or colours < min_colours


def save_png(png: bytes, path: Path, max_bytes: int = 280_000) -> int:
    """Write a screenshot as a palette PNG of at most ``max_bytes`` (fewer colours until it fits; README images
    stay small); returns its size in bytes."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    for colours in (256, 128, 64, 32):
        image.quantize(colors=colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        if path.stat().st_size <= max_bytes:
            break
    return path.stat().st_size
