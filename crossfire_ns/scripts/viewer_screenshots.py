"""The README screenshots of the crossfire viewer, taken in headless Chromium.

    python -m crossfire_ns.scripts.viewer_screenshots --load-config <run>/config.yml --output-dir docs/images

takes ``viewer_descriptor_pca.png`` and ``viewer_descriptor_similarity.png``; with ``--poses-file`` also
``viewer_localized_cameras.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import tyro

from crossfire_ns.map import load_map
from crossfire_ns.viewer.browser import find_chromium
from crossfire_ns.viewer.screenshot import ViewerSession, is_blank, save_png


@dataclass
class Screenshots:
    """Take the README screenshots of the crossfire viewer in headless Chromium."""

    load_config: Path
    """config.yml of a trained crossfire map."""
    output_dir: Path = Path("docs/images")
    """Where the PNGs go."""
    camera_index: int = 0
    """Training camera to look through."""
    pick: Tuple[float, float] = (0.3, 0.55)
    """Where to click for the similarity reference, as fractions of the 3D view (x, y)."""
    poses_file: Optional[Path] = None
    """A poses.json from ns-localize: also take viewer_localized_cameras.png."""
    query_dir: Optional[Path] = None
    """The --query-dir of that run (thumbnails and ground truth)."""
    max_res: int = 256
    """The viewer's max render resolution."""
    width: int = 1200
    """Browser window width."""
    height: int = 1100
    """Browser window height."""

    def main(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        chromium = find_chromium()
        if chromium is None:
            raise SystemExit("chromium not found: apt-get install chromium (or set CROSSFIRE_CHROMIUM)")
        crossfire_map = load_map(Path(self.load_config))
        with ViewerSession(
            crossfire_map.pipeline, chromium, self.width, self.height, self.max_res, timeout=180
        ) as session:
            session.look_through_training_camera(self.camera_index)
            session.tools.request_pca_refit()
            since = time.time()
            session.select_output("descriptor_pca")
            session.wait_for_frame("descriptor_pca", since)
            self._save(session, "viewer_descriptor_pca.png", CONSOLE)
            session.pick_reference(*self.pick)
            since = time.time()
            session.select_output("descriptor_similarity")
            session.wait_for_frame("descriptor_similarity", since)
            self._save(session, "viewer_descriptor_similarity.png", CONSOLE)
            if self.poses_file is not None:
                summary = session.load_cameras(self.poses_file, self.query_dir)
                CONSOLE.print(summary)
                session.view_from_behind_training_camera(self.camera_index)
                since = time.time()
                session.select_output("rgb")
                session.wait_for_frame("rgb", since)
                self._save(session, "viewer_localized_cameras.png", CONSOLE)

    def _save(self, session: ViewerSession, name: str, console) -> None:
        png, canvas = session.screenshot()
        if is_blank(canvas):
            raise RuntimeError(f"{name}: the 3D view is blank")
        size = save_png(png, Path(self.output_dir) / name)
        console.print(f"wrote {Path(self.output_dir) / name} ({size / 1024:.0f} KB)")


def entrypoint() -> None:
    tyro.cli(Screenshots).main()


if __name__ == "__main__":
    entrypoint()
