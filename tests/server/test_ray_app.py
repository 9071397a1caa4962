"""Replicas on Ray Serve: the same app (token, limits) behind Ray's proxy, replicas spread over a local cluster of two
nodes (Ray's own ``cluster_utils.Cluster``), each answering. Skipped, with the reason, where Ray is not installed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install '.[serve]'): replicas not tested")
serve = pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install '.[serve]')")

from crossfire_ns.scripts.server import Serve, ServerSetupError, ray_build  # noqa: E402
from crossfire_ns.server.ray_app import replicated  # noqa: E402
from crossfire_ns.viewer.serve import free_port  # noqa: E402
from tests.server.stub import TOKEN, H, W, png_bytes  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def stub_app_naming_its_node():
    """The app on a stub localizer whose map's method names the Ray node the replica runs on."""
    from crossfire_ns.server.app import create_app
    from tests.server.stub import StubLocalizer

    stub = StubLocalizer()
    stub.map.method = ray.get_runtime_context().get_node_id()
    return create_app(stub, token=TOKEN, max_upload_bytes=100_000)


@pytest.fixture(scope="module")
def two_node_url():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(replicated(stub_app_naming_its_node, replicas=2), name="crossfire", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def test_two_replicas_on_two_nodes_both_answer_and_none_is_lost(two_node_url):
    url = two_node_url
    nodes = {httpx.get(f"{url}/map", headers=AUTH, timeout=30).json()["method"] for _ in range(40)}
    assert len(nodes) == 2, nodes  # one replica per node (one CPU each), both answering

    def localize(_):
        return httpx.post(
            f"{url}/localize",
            files={"image": ("q.png", png_bytes(), "image/png")},
            data={"fx": "70", "fy": "70", "cx": str(W / 2), "cy": str(H / 2)},
            headers=AUTH,
            timeout=60,
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(localize, range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    assert all(a.json()["status"] == "localized" and len(a.json()["covariance"]) == 6 for a in answers)


def test_behind_rays_proxy_the_token_and_the_limits_still_hold(two_node_url):
    url = two_node_url
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # no token needed
    assert httpx.get(f"{url}/map", timeout=30).status_code == 401
    too_big = httpx.post(
        f"{url}/localize",
        files={"image": ("q.png", b"x" * 300_000, "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert too_big.status_code == 413


def test_flags_are_checked_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("CROSSFIRE_SERVER_TOKEN", raising=False)
    with pytest.raises(ServerSetupError, match="--replicas 0"):
        Serve(load_config=tmp_path / "config.yml").replica_application()
    with pytest.raises(ServerSetupError, match="unknown arguments colour"):
        ray_build({"load_config": str(tmp_path / "config.yml"), "colour": "red"})
    with pytest.raises(ServerSetupError, match="no map"):
        ray_build({"replicas": "2"})
    with pytest.raises(ServerSetupError, match="--map-root lets clients load maps"):
        ray_build({"map": "a=x/config.yml,b=y/config.yml", "map-root": str(tmp_path), "replicas": "2"})
