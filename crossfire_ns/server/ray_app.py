"""The localization service as N replicas on Ray Serve (``pip install .[serve]``): the same FastAPI app (limits,
token, several maps) in each replica, each replica holding its maps, Ray's proxy spreading requests over them.

    ns-localize-server --load-config RUN/config.yml --replicas 2 [--torch-threads 1]
    serve run crossfire_ns.server.ray_app:build load_config=RUN/config.yml replicas=2     # Ray's own CLI

``build`` takes ``ns-localize-server``'s flags as ``key=value`` (dashes or underscores; ``map`` may list several
``NAME=config.yml`` separated by commas). On a cluster of several machines (``ray start --head`` on one,
``ray start --address HEAD:6379`` on the others, the maps at the same path on each), ``serve run --address
ray://HEAD:10001 ...`` (or ``RAY_ADDRESS``) places the replicas over the nodes. Each replica counts one torch
thread (``num_cpus``) unless told otherwise; the token comes from the driver's ``CROSSFIRE_SERVER_TOKEN`` or
``--token-file`` and travels to the replicas as a constructor argument (not an environment variable, which Ray's
dashboard shows).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Dict

from ray import serve
from ray.serve.deployment import Application

from crossfire_ns.scripts.server import CONNECTION_HEADROOM, Serve, ServerSetupError
from crossfire_ns.server.app import QUEUE_SIZE

MAX_QUEUED_PER_REPLICA = 8
"""Requests Ray's proxy holds per replica when every replica is full; more are answered 503 by Ray."""


class LocalizerReplica:
    """One replica: builds its app on the replica (loading the maps there) and answers with it through Ray Serve's
    FastAPI ingress."""

    def __init__(self, build_app: Callable[[], Any], torch_threads: int) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        self.asgi_app = build_app()

    def __serve_build_asgi_app__(self):
        return self.asgi_app


def replicated(build_app: Callable[[], Any], replicas: int, torch_threads: int = 1, queue_size: int = QUEUE_SIZE):
    """A Serve application of ``replicas`` replicas, each serving the app ``build_app()`` returns on it."""
    deployment = serve.deployment(
        serve.ingress()(LocalizerReplica),
        name="crossfire-localizer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": torch_threads},
        max_ongoing_requests=queue_size + 1 + CONNECTION_HEADROOM,
        max_queued_requests=MAX_QUEUED_PER_REPLICA * replicas,
        health_check_period_s=10,
    )
    return deployment.bind(build_app, torch_threads)


def application(config: Serve, replicas: int, torch_threads: int = 1) -> Application:
    """The Serve application of ``config``'s maps with ``replicas`` replicas (flags checked first: a
    ``ServerSetupError`` names the one to fix)."""
    if replicas < 1:
        raise ServerSetupError(f"--replicas {replicas}: must be at least 1")
    if torch_threads < 1:
        raise ServerSetupError(f"--torch-threads {torch_threads}: must be at least 1")
    token, loopback = config.setup()
    return replicated(functools.partial(config.build_app, token, loopback), replicas, torch_threads, config.queue_size)


def _value(field: dataclasses.Field, text: str) -> Any:
    """A flag's value of ``build``'s arguments, typed as the field of ``Serve``."""
    kind = str(field.type)
    if field.name == "map":
        return [item for item in text.split(",") if item]
    if "Path" in kind:
        return Path(text)
    if kind.startswith("int") or "Optional[int]" in kind:
        return int(text)
    if kind.startswith("float"):
        return float(text)
    return text


def build(args: Dict[str, str]) -> Application:
    """``serve run crossfire_ns.server.ray_app:build key=value ...``: ``replicas``, ``torch_threads`` and any flag of
    ``ns-localize-server`` but the method's (the default matcher serves)."""
    args = {key.replace("-", "_"): value for key, value in args.items()}
    replicas = int(args.pop("replicas", "1"))
    torch_threads = int(args.pop("torch_threads", "1"))
    fields = {field.name: field for field in dataclasses.fields(Serve)}
    unknown = sorted(set(args) - set(fields) - {"matcher"})
    if unknown:
        raise ServerSetupError(f"unknown arguments {', '.join(unknown)} (ns-localize-server --help lists the flags)")
    config = Serve(**{key: _value(fields[key], value) for key, value in args.items()})
    return application(config, replicas, torch_threads)


def run(config: Serve, replicas: int, torch_threads: int = 1) -> None:
    """Start Ray here (or join ``RAY_ADDRESS``), serve ``config`` on its host and port with ``replicas`` replicas,
    and block until interrupted."""
    import ray

    app = application(config, replicas, torch_threads)
    ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(app, name="crossfire", route_prefix="/", blocking=True)
