"""Where a query's time goes: cProfile over one query folder, localized with ns-localize's defaults.

Every query is localized once unprofiled (the plain seconds per query), then again under cProfile; the table lists
the project's own functions and poselib by cumulative time, then everything by own time.

    python -m benchmarks.profile_localize --load-config MAP/config.yml --query-dir QUERIES [--limit 10]
"""

from __future__ import annotations

import cProfile
import pstats
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import tyro
from rich.console import Console

from crossfire_ns.localize.matchers.crossfire import CrossfireMatcherConfig

CONSOLE = Console(width=140)


@dataclass
class ProfileLocalize:
    """Profile the localizer on a query folder (floors off: every query runs every stage)."""

    load_config: Path
    """config.yml of the map."""
    query_dir: Path
    """Query folder (images/ and transforms.json, as ns-localize reads it)."""
    limit: Optional[int] = None
    """Profile only the first this many queries."""
    rows: int = 40
    """Functions listed per table."""
    matcher: CrossfireMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """The localizer's settings (ns-localize's defaults)."""

    def main(self) -> float:
        from crossfire_ns.io.queries import load_query_set, read_query_image
        from crossfire_ns.localize.api import MapLocalizer
        from crossfire_ns.map import load_map

        localizer = MapLocalizer(load_map(self.load_config), self.matcher)
        localizer.warm_up()
        queries, _ = load_query_set(self.query_dir)
        images = [(read_query_image(q), q.K) for q in queries[: self.limit]]
        localizer.localize(images[0][0], K=images[0][1])  # first-call costs (allocations, caches) stay out
        started = time.perf_counter()
        for image, K in images:
            localizer.localize(image, K=K)
        plain = (time.perf_counter() - started) / len(images)
        profile = cProfile.Profile()
        profile.enable()
        for image, K in images:
            localizer.localize(image, K=K)
        profile.disable()
        CONSOLE.print(f"{len(images)} queries: {plain:.3f} s per query unprofiled")
        stats = pstats.Stats(profile)
        stats.sort_stats("cumulative").print_stats(r"crossfire_ns|poselib", self.rows)
        stats.sort_stats("tottime").print_stats(self.rows)
        return plain


def entrypoint() -> None:
    tyro.cli(ProfileLocalize).main()


if __name__ == "__main__":
    entrypoint()
