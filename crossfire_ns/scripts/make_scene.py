"""crossfire-make-scene: generate the bundled synthetic scene (training views + lighting-changed queries).

crossfire-make-scene --output-dir DIR [--width 160 --height 120 --seed 0 ...]
crossfire-make-scene --output-dir DIR --layout inside-out --write-depth   # cameras near the centre looking out, depth/
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import tyro

from crossfire_ns.synthetic import (
    NovelViewConfig,
    SyntheticSceneConfig,
    WalkConfig,
    generate_novel_views,
    generate_scene,
    generate_walk,
)


@dataclass
class MakeSceneArgs:
    """Generate the bundled synthetic scene (training views + lighting-changed queries)."""

    output_dir: Path
    """Folder to write transforms.json, images/, queries/ and scene.json into."""
    scene: tyro.conf.OmitArgPrefixes[SyntheticSceneConfig] = field(default_factory=SyntheticSceneConfig)
    """Scene parameters."""
    walk: WalkConfig = field(default_factory=WalkConfig)
    """With --walk.frames N: also a smooth camera path of N frames through the room in walk/ (for tracking)."""
    novel: NovelViewConfig = field(default_factory=NovelViewConfig)
    """With --novel.views N: also N queries from viewpoints no training camera took, in novel/."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Processes rendering views at once (default: one per CPU); the files are the same for any number."""


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Parse arguments, generate the scene with a progress bar, print a summary; returns the output dir."""
    from rich.console import Console
    from rich.progress import Progress

    args = tyro.cli(MakeSceneArgs, args=None if argv is None else list(argv))
    config = args.scene
    console = Console()
    total = config.num_train + config.num_query
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("Rendering views", total=total)
        out = generate_scene(args.output_dir, config, on_view=lambda _: progress.advance(task), workers=args.workers)
    if args.walk.frames > 0:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Rendering the walk", total=args.walk.frames)
            generate_walk(out / "walk", config, args.walk, on_view=lambda _: progress.advance(task))
        console.print(f"Wrote a walk of {args.walk.frames} frames to {out / 'walk'}", markup=False, highlight=False)
    if args.novel.views > 0:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Rendering novel viewpoints", total=args.novel.views)
            generate_novel_views(out / "novel", config, args.novel, on_view=lambda _: progress.advance(task))
        console.print(f"Wrote {args.novel.views} novel-view queries to {out / 'novel'}", markup=False, highlight=False)
    console.print(
        f"Wrote {config.num_train} training views and {config.num_query} queries "
        f"({config.width}x{config.height}, {config.layout}, seed {config.seed}"
        f"{', with depth/' if config.write_depth else ''}) to {out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return out


def entrypoint() -> None:
    """Console-script entry point (crossfire-make-scene)."""
    main()


if __name__ == "__main__":
    entrypoint()
