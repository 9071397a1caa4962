"""ns-localize-server: localize images over HTTP against a map that stays loaded.

    ns-localize-server --load-config RUN/config.yml [--host 127.0.0.1] [--port 8750]
    curl -F image=@frame.png -F fx=120 -F fy=120 -F cx=80 -F cy=60 http://127.0.0.1:8750/localize

Endpoints and answers: ``crossfire_ns.server.app`` (and ``/docs`` on the running server).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.localize.api import MAX_IMAGE_SIDE, MapLocalizer
from crossfire_ns.localize.matchers import AnyMatcherConfig, CrossfireMatcherConfig
from crossfire_ns.localize.priors import RetrievalScore
from crossfire_ns.scripts.cli import run
from crossfire_ns.server.app import MAX_UPLOAD_BYTES, QUEUE_SIZE, create_app


@dataclass
class Serve:
    """Serve localization of single images against one trained crossfire map."""

    load_config: Path
    """config.yml of a crossfire run (written by ns-train)."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 serves this machine only (pass 0.0.0.0 to serve the network)."""
    port: int = 8750
    """TCP port."""
    matcher: AnyMatcherConfig = field(default_factory=CrossfireMatcherConfig)
    """The method, as for ns-localize (matcher:<name> with its --matcher.* options)."""
    retrieval: RetrievalScore = "matches"
    """How retrieval ranks training views for images without a prior or sequence."""
    data: Optional[Path] = None
    """Training data folder, if it moved since training."""
    max_image_side: int = MAX_IMAGE_SIDE
    """Images whose longer side exceeds this many pixels are downscaled (their intrinsics with them)."""
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    """Larger uploads are refused (413)."""
    queue_size: int = QUEUE_SIZE
    """Requests that may wait while one is localized; more are answered 503 (busy)."""

    def main(self) -> int:
        import uvicorn
        from nerfstudio.utils.rich_utils import CONSOLE

        try:
            localizer = MapLocalizer.load(
                self.load_config,
                self.data,
                matcher=self.matcher,
                retrieval=self.retrieval,
                max_image_side=self.max_image_side,
            )
        except CrossfireInputError as err:
            CONSOLE.print(f"[bold red]ns-localize-server: {err}")
            return 2
        localizer.warm_up()  # the retrieval and map indexes, so that the first request does not wait for them
        app = create_app(localizer, self.max_upload_bytes, self.queue_size)
        CONSOLE.print(f"Serving {self.load_config} on http://{self.host}:{self.port} (POST /localize, GET /map, /docs)")
        uvicorn.run(app, host=self.host, port=self.port, log_level="info")
        return 0


def entrypoint() -> None:
    run(Serve)


if __name__ == "__main__":
    entrypoint()
