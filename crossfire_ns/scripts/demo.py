"""`make demo`: generate the bundled scene, train crossfire-lite on it (CPU), localize its query folder.

Each step runs the real command a user would run (ns-train, ns-localize), so the demo shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import tyro
from rich.console import Console

CONSOLE = Console()


@dataclass
class Demo:
    """Bundled-scene demo: scene -> crossfire-lite map -> ns-localize."""

    output_dir: Path = Path("demo_output")
    """Everything goes here: scene/, runs/, localization/."""
    max_num_iterations: Optional[int] = None
    """Training iterations of crossfire-lite (default: crossfire-lite's own, so the demo trains what
    ``ns-train crossfire-lite`` with no options trains)."""
    retrain: bool = False
    """Train again even if a finished map from an earlier demo run is there."""

    def main(self) -> int:
        from crossfire_ns.synthetic import SyntheticSceneConfig, generate_scene

        bin_dir = Path(sys.executable).parent
        scene = self.output_dir / "scene"
        runs = self.output_dir / "runs"
        config = runs / "demo" / "crossfire-lite" / "map" / "config.yml"
        started = time.perf_counter()
        CONSOLE.rule("1/3 bundled scene")
        generate_scene(scene, SyntheticSceneConfig(), workers=os.cpu_count() or 1)
        checkpoints = sorted((config.parent / "nerfstudio_models").glob("*.ckpt")) if config.exists() else []
        CONSOLE.rule("2/3 ns-train crossfire-lite (CPU)")
        if checkpoints and not self.retrain:
            CONSOLE.print(f"Reusing the map in {config.parent} (pass --retrain to train again).")
        else:
            shutil.rmtree(config.parent, ignore_errors=True)
            train = [
                str(bin_dir / "ns-train"), "crossfire-lite", "--data", str(scene),
                "--output-dir", str(runs), "--experiment-name", "demo", "--timestamp", "map",
                "--machine.device-type", "cpu", "--vis", "tensorboard",
                "--viewer.quit-on-train-completion", "True",
            ]  # fmt: skip
            if self.max_num_iterations is not None:
                train += ["--max-num-iterations", str(self.max_num_iterations)]
            CONSOLE.print(" ".join(["ns-train", *train[1:]]))
            subprocess.run(train, check=True)
        CONSOLE.rule("3/3 ns-localize on the lighting-changed queries")
        localize = [
            str(bin_dir / "ns-localize"), "--load-config", str(config),
            "--query-dir", str(scene / "queries"), "--output-dir", str(self.output_dir / "localization"),
            # recall thresholds scale with the scene's own extent (the room's diagonal, from scene.json)
            "--scene-extent", str(json.loads((scene / "scene.json").read_text())["scene_extent"]),
            # the demo owns its output folder: a rerun after an upgrade (other matcher defaults) replaces it
            "--overwrite",
        ]  # fmt: skip
        CONSOLE.print(" ".join(["ns-localize", *localize[1:]]))
        code = subprocess.run(localize).returncode
        CONSOLE.print(f"Demo finished in {time.perf_counter() - started:.0f} s; outputs in {self.output_dir}/")
        return code


def entrypoint() -> None:
    sys.exit(tyro.cli(Demo).main())


if __name__ == "__main__":
    entrypoint()
