"""ns-localize-server: localize images over HTTP against a map that stays loaded.

    ns-localize-server --load-config RUN/config.yml [--host 127.0.0.1] [--port 8750]
    curl -F image=@frame.png -F fx=120 -F fy=120 -F cx=80 -F cy=60 http://127.0.0.1:8750/localize

Several maps: ``--map floor2=RUN2/config.yml`` (repeated), each answered at ``/maps/NAME/localize``; with a token and
``--map-root DIR``, ``POST /maps/NAME`` (form field ``config``) loads another under DIR while the others serve.

With a token (``CROSSFIRE_SERVER_TOKEN=<secret>`` in the environment, or ``--token-file FILE``) every request but
``GET /health`` needs ``Authorization: Bearer <secret>``; serving beyond this machine (``--host 0.0.0.0``) needs one.
Endpoints and answers: ``crossfire_ns.server.app`` (and ``/docs`` on the running server).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tyro
from typing_extensions import Annotated

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.localize.api import MAX_IMAGE_SIDE, MapLocalizer
from crossfire_ns.localize.matchers import AnyMatcherConfig, CrossfireMatcherConfig
from crossfire_ns.localize.priors import RetrievalScore
from crossfire_ns.scripts.cli import run
from crossfire_ns.server.app import (
    BODY_TIMEOUT,
    DEFAULT_MAP,
    MAP_NAME,
    MAX_MAPS,
    MAX_UPLOAD_BYTES,
    QUEUE_SIZE,
    create_app,
)
from crossfire_ns.server.guard import LOOPBACK_HOSTS

TOKEN_ENV = "CROSSFIRE_SERVER_TOKEN"
"""Environment variable holding the bearer token."""
MIN_TOKEN_CHARS = 16
"""Shorter tokens are refused: a guessable token is no lock."""
CONNECTION_HEADROOM = 8
"""Connections uvicorn accepts beyond the queue (for /health, /map and the 503s that say busy)."""
KEEP_ALIVE_SECONDS = 5
"""An idle kept-alive connection is closed after this long."""
TOKEN_HOW = (
    f"set one: export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'), or write it to a "
    f"file readable only by you and pass --token-file FILE; clients send 'Authorization: Bearer <token>'"
)


class ServerSetupError(CrossfireInputError):
    """The server cannot start as asked; the message names the flag and the fix."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) serves this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: Optional[Path]) -> Optional[str]:
    """The token of ``--token-file`` or of the environment (the file wins); None when neither gives one."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ServerSetupError(f"--token-file {token_file}: cannot be read ({err}); {TOKEN_HOW}") from err
        where = f"--token-file {token_file}"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        where = TOKEN_ENV
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token) or not token.isprintable():
        raise ServerSetupError(
            f"{where}: a token must be at least {MIN_TOKEN_CHARS} printable characters without spaces; {TOKEN_HOW}"
        )
    return token


@dataclass
class Serve:
    """Serve localization of single images against trained crossfire maps."""

    load_config: Optional[Path] = None
    """config.yml of a crossfire run (written by ns-train): the default map, answered at /localize and /map."""
    map: Annotated[List[str], tyro.conf.UseAppendAction] = field(default_factory=list)
    """Another map, NAME=RUN/config.yml (repeat the flag for more): answered at /maps/NAME/localize. Without
    --load-config the first is the default map."""
    map_name: str = DEFAULT_MAP
    """Name of the --load-config map under /maps."""
    map_root: Optional[Path] = None
    """Folder under which POST /maps/{name} may load more maps while the others serve (needs a token)."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 serves this machine only (another, e.g. 0.0.0.0, needs a token)."""
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
    max_image_pixels: Optional[int] = None
    """Images whose header declares more pixels are refused before decoding (413); default from --max-image-side."""
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    """Larger uploads are refused (413) before their body is read."""
    queue_size: int = QUEUE_SIZE
    """Requests that may wait while one is localized; more are answered 503 (busy) with Retry-After."""
    token_file: Optional[Path] = None
    """File holding the bearer token clients must send (else the CROSSFIRE_SERVER_TOKEN environment variable)."""
    body_timeout: float = BODY_TIMEOUT
    """Seconds a request's body may pause before the request is dropped (408)."""
    replicas: int = 0
    """> 0: serve with this many replicas on Ray Serve, each holding the maps (pip install crossfire_ns[serve]); 0: one
    uvicorn process."""
    torch_threads: int = 1
    """With --replicas: torch threads (and Ray CPUs) per replica."""

    def check(self) -> List[str]:
        """What is wrong with the flags (each message names its flag); empty when they can be used."""
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port {self.port}: must be 0 to 65535")
        for flag, value in (
            ("--max-image-side", self.max_image_side),
            ("--max-upload-bytes", self.max_upload_bytes),
            ("--queue-size", self.queue_size),
        ):
            if value < 1:
                problems.append(f"{flag} {value}: must be at least 1")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            problems.append(f"--max-image-pixels {self.max_image_pixels}: must be at least 1")
        if not (math.isfinite(self.body_timeout) and self.body_timeout > 0):
            problems.append(f"--body-timeout {self.body_timeout}: must be a finite number of seconds above 0")
        if self.replicas < 0 or self.torch_threads < 1:
            problems.append(f"--replicas {self.replicas} --torch-threads {self.torch_threads}: must be >= 0 and >= 1")
        if self.load_config is None and not self.map:
            problems.append("no map: give --load-config RUN/config.yml or --map NAME=RUN/config.yml")
        names = [self.map_name] if self.load_config is not None else []
        for item in self.map:
            name, sep, config = item.partition("=")
            if not sep or not config:
                problems.append(f"--map {item}: must be NAME=RUN/config.yml")
            elif not MAP_NAME.fullmatch(name):
                problems.append(f"--map {item}: a name is 1 to 64 letters, digits, '.', '_' or '-'")
            elif name in names:
                problems.append(f"--map {item}: the name {name!r} is given twice")
            names.append(name)
        if self.load_config is not None and not MAP_NAME.fullmatch(self.map_name):
            problems.append(f"--map-name {self.map_name}: a name is 1 to 64 letters, digits, '.', '_' or '-'")
        if len(names) > MAX_MAPS:
            problems.append(f"{len(names)} maps: at most {MAX_MAPS}")
        if self.map_root is not None and not self.map_root.is_dir():
            problems.append(f"--map-root {self.map_root}: not a folder")
        return problems

    def configs(self) -> List[Tuple[str, Path]]:
        """(name, config.yml) of every map to serve, the default first (after ``check``)."""
        named = [(name, Path(config)) for name, _, config in (item.partition("=") for item in self.map)]
        return ([(self.map_name, self.load_config)] if self.load_config is not None else []) + named

    def load_localizer(self, config: Path) -> MapLocalizer:
        """The localizer of one map, warmed up (the retrieval and map indexes), with this server's options."""
        localizer = MapLocalizer.load(
            config, self.data, matcher=self.matcher, retrieval=self.retrieval, max_image_side=self.max_image_side
        )
        localizer.warm_up()  # so that the first request does not wait for the indexes
        return localizer

    def setup(self) -> Tuple[Optional[str], bool]:
        """(the token, whether serving this machine only); ``ServerSetupError`` naming the flag when the flags cannot
        be used (checked before any map is loaded)."""
        problems = self.check()
        if problems:
            raise ServerSetupError("; ".join(problems))
        token = read_token(self.token_file)
        loopback = is_loopback(self.host)
        if token is None and not loopback:
            raise ServerSetupError(
                f"--host {self.host} serves other machines, so requests must carry a token; {TOKEN_HOW}. "
                f"(Or serve this machine only: --host 127.0.0.1.)"
            )
        if self.map_root is not None and token is None:
            raise ServerSetupError(f"--map-root lets clients load maps, so requests must carry a token; {TOKEN_HOW}")
        return token, loopback

    def build_app(self, token: Optional[str], loopback: bool):
        """Load every map and build the service on them (the plain server and each Ray Serve replica do this)."""
        localizers: Dict[str, MapLocalizer] = {name: self.load_localizer(config) for name, config in self.configs()}
        default = next(iter(localizers))
        return create_app(
            localizers.pop(default),
            self.max_upload_bytes,
            self.queue_size,
            token=token,
            allowed_hosts=LOOPBACK_HOSTS if loopback else None,
            max_pixels=self.max_image_pixels,
            body_timeout=self.body_timeout,
            name=default,
            more_maps=localizers,
            map_loader=self.load_localizer,
            map_root=self.map_root,
        )

    def main(self) -> int:
        from nerfstudio.utils.rich_utils import CONSOLE

        if self.replicas > 0:
            return self.main_replicas()
        try:
            token, loopback = self.setup()
            app = self.build_app(token, loopback)
        except CrossfireInputError as err:
            CONSOLE.print(f"[bold red]ns-localize-server: {err}")
            return 2
        import uvicorn

        guarded = "token required" if token else "no token: this machine only"
        names = ", ".join(name for name, _ in self.configs())
        CONSOLE.print(
            f"Serving maps {names} on http://{self.host}:{self.port} ({guarded}; POST /localize, "
            f"/maps/NAME/localize, GET /map, /maps, /health, /docs)"
        )
        uvicorn.run(
            app,
            host=self.host,
            port=self.port,
            log_level="info",
            limit_concurrency=self.queue_size + 1 + CONNECTION_HEADROOM,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        return 0

    def replica_application(self):
        """The Ray Serve application of this server's maps with ``replicas`` replicas (``crossfire_ns.server.ray_app``);
        the flags are checked first (``ServerSetupError``)."""
        from crossfire_ns.server.ray_app import replicated

        if self.replicas < 1:
            raise ServerSetupError(f"--replicas {self.replicas}: must be at least 1 to serve on Ray")
        token, loopback = self.setup()
        build = functools.partial(self.build_app, token, loopback)
        return replicated(build, self.replicas, self.torch_threads, self.queue_size + 1 + CONNECTION_HEADROOM)

    def main_replicas(self) -> int:
        """Serve on Ray Serve with ``replicas`` replicas."""
        from nerfstudio.utils.rich_utils import CONSOLE

        try:
            from crossfire_ns.server.ray_app import serve_blocking
        except ImportError as err:
            CONSOLE.print(f"[bold red]ns-localize-server: --replicas needs Ray Serve ({err}); pip install '.[serve]'")
            return 2
        try:
            app = self.replica_application()
        except CrossfireInputError as err:
            CONSOLE.print(f"[bold red]ns-localize-server: {err}")
            return 2
        CONSOLE.print(f"Serving on http://{self.host}:{self.port} with {self.replicas} replicas on Ray Serve")
        serve_blocking(app, self.host, self.port)
        return 0


def _flag_value(spec: dataclasses.Field, text: str) -> Any:
    """A flag's value of ``ray_build``'s arguments, typed as the field of ``Serve`` (``map``: comma-separated)."""
    kind = str(spec.type)
    if spec.name == "map":
        return [item for item in text.split(",") if item]
    if "Path" in kind:
        return Path(text)
    if kind.startswith("int") or "Optional[int]" in kind:
        return int(text)
    if kind.startswith("float"):
        return float(text)
    return text


def ray_build(args: Dict[str, str]):
    """``serve run crossfire_ns.scripts.server:ray_build key=value ...``: any flag of ``ns-localize-server`` but the
    method's (dashes or underscores; ``replicas`` defaults to 1)."""
    args = {key.replace("-", "_"): value for key, value in args.items()}
    args.setdefault("replicas", "1")
    fields = {spec.name: spec for spec in dataclasses.fields(Serve)}
    unknown = sorted(set(args) - set(fields) - {"matcher"})
    if unknown:
        raise ServerSetupError(f"unknown arguments {', '.join(unknown)} (ns-localize-server --help lists the flags)")
    return Serve(**{key: _flag_value(fields[key], value) for key, value in args.items()}).replica_application()


def entrypoint() -> None:
    run(Serve)


if __name__ == "__main__":
    entrypoint()
