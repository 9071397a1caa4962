"""The localization service as N replicas on Ray Serve (``pip install .[serve]``): the same FastAPI app (limits,
token, several maps) in each replica, each replica holding its maps, Ray's proxy spreading requests over them.

    ns-localize-server --load-config RUN/config.yml --replicas 2 [--torch-threads 1]
    serve run crossfire_ns.scripts.server:ray_build load_config=RUN/config.yml replicas=2     # Ray's own CLI

``ray_build`` (in ``crossfire_ns.scripts.server``) takes ``ns-localize-server``'s flags as ``key=value``. On a cluster
of several machines (``ray start --head`` on one, ``ray start --address HEAD:6379`` on the others, the maps at the
same path on each), ``serve run`` with ``RAY_ADDRESS=ray://HEAD:10001`` places the replicas over the nodes. Each
replica counts its torch threads as Ray CPUs; the token travels to the replicas inside the app's builder, a
constructor argument (not an environment variable, which Ray's dashboard shows).
"""

from __future__ import annotations

from typing import Any, Callable

from ray import serve
from ray.serve.deployment import Application

MAX_QUEUED_PER_REPLICA = 8
"""Requests Ray's proxy holds per replica when every replica is full; more are refused (Ray's back-pressure)."""


class LocalizerReplica:
    """One replica: builds its app on the replica (loading the maps there) and answers with it through Ray Serve's
    FastAPI ingress."""

    def __init__(self, build_app: Callable[[], Any], torch_threads: int) -> None:
        import torch

        torch.set_num_threads(torch_threads)
        self.asgi_app = build_app()

    def __serve_build_asgi_app__(self):
        return self.asgi_app


def replicated(
    build_app: Callable[[], Any], replicas: int, torch_threads: int = 1, max_ongoing_requests: int = 18
) -> Application:
    """A Serve application of ``replicas`` replicas, each serving the app ``build_app()`` returns on it, reserving
    ``torch_threads`` CPUs and taking at most ``max_ongoing_requests`` at once (its queue, plus room for /health)."""
    deployment = serve.deployment(
        serve.ingress()(LocalizerReplica),
        name="crossfire-localizer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": torch_threads},
        max_ongoing_requests=max_ongoing_requests,
        max_queued_requests=MAX_QUEUED_PER_REPLICA * replicas,
        health_check_period_s=10,
    )
    return deployment.bind(build_app, torch_threads)


def serve_blocking(app: Application, host: str, port: int) -> None:
    """Start Ray here (or join ``RAY_ADDRESS``), serve ``app`` on ``host:port`` and block until interrupted."""
    import ray

    ray.init(include_dashboard=False, ignore_reinit_error=True)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name="crossfire", route_prefix="/", blocking=True)
