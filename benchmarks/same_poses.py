"""Whether two versions of the code give the same poses: localize query folders with the code on the path and record
every pose and figure (``collect``), then compare two records bit for bit and their seconds per query (``compare``).

    PYTHONPATH=OLD_CHECKOUT python -m benchmarks.same_poses collect --output old.json --jobs MAP/config.yml=QUERIES ...
    python -m benchmarks.same_poses collect --output new.json --jobs MAP/config.yml=QUERIES ...
    python -m benchmarks.same_poses compare old.json new.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import tyro
from rich.console import Console

from crossfire_ns.io.atomic import write_json_atomic

CONSOLE = Console(width=120)


def _plain(value):
    """A figure as JSON writes it exactly (non-finite floats as text)."""
    return str(value) if isinstance(value, float) and not np.isfinite(value) else value


@dataclass
class Collect:
    """Localize each MAP=QUERIES job with ns-localize's defaults; write every answer."""

    output: Path
    jobs: List[str] = field(default_factory=list)
    """MAP_CONFIG=QUERY_DIR pairs (query folders with transforms.json)."""

    def main(self) -> None:
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer

        rows = []
        for job in self.jobs:
            config, query_dir = job.split("=", 1)
            localizer = MapLocalizer.load(config)
            localizer.warm_up()  # the index is built before the clock starts
            for q in load_query_set(Path(query_dir))[0]:
                a = localizer.localize(read_query_image(q), K=q.K)
                rows.append(
                    {
                        "map": config, "dir": query_dir, "file": q.file_path, "status": a.status,
                        "c2w": None if a.c2w is None else np.asarray(a.c2w).tolist(), "message": a.message,
                        "seconds": a.seconds, "diagnostics": {k: _plain(v) for k, v in a.diagnostics.items()},
                    }
                )  # fmt: skip
                CONSOLE.print(f"{query_dir} {q.file_path}: {a.status} {a.seconds:.3f} s")
        write_json_atomic(self.output, rows)


@dataclass
class Compare:
    """Status, pose (bit for bit) and figures of two records, and their median seconds per query folder."""

    files: tyro.conf.Positional[List[Path]] = field(default_factory=list)

    def main(self) -> int:
        old, new = (json.loads(Path(f).read_text()) for f in self.files[:2])
        same = 0
        for a, b in zip(old, new):
            if (a["dir"], a["file"]) != (b["dir"], b["file"]):
                raise SystemExit("the two records are of different queries")
            pose_same = a["status"] == b["status"] and a["c2w"] == b["c2w"]
            same += pose_same
            if not pose_same:
                CONSOLE.print(f"[red]differs: {a['dir']} {a['file']}: {a['status']} / {b['status']}")
            for name in sorted(set(a["diagnostics"]) | set(b["diagnostics"])):
                if a["diagnostics"].get(name) != b["diagnostics"].get(name):
                    CONSOLE.print(
                        f"figure {name} differs: {a['file']} {a['diagnostics'].get(name)} / {b['diagnostics'].get(name)}"
                    )
        CONSOLE.print(f"{same} of {len(old)} poses identical (status and c2w bit for bit)")
        for label, rows in zip(self.files, (old, new)):
            for folder in [*dict.fromkeys(r["dir"] for r in rows), None]:
                seconds = [r["seconds"] for r in rows if folder is None or r["dir"] == folder]
                CONSOLE.print(f"{label.name} {folder or 'all'}: median {np.median(seconds):.3f} s per query")
        return 0 if same == len(old) == len(new) else 1


def entrypoint() -> None:
    tyro.extras.subcommand_cli_from_dict({"collect": Collect, "compare": Compare}).main()


if __name__ == "__main__":
    entrypoint()
