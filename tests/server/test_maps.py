"""Several maps in one service: listed, described and localized against by name, the default map's routes unchanged,
a map added while the others serve (token and map root required), each map with its own health."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from crossfire_ns.errors import CrossfireInputError
from crossfire_ns.server import app as app_module
from crossfire_ns.server.app import create_app
from tests.server.stub import TOKEN, H, StubLocalizer, W, png_bytes, serving

INTRINSICS = {"fx": "70", "fy": "70", "cx": str(W / 2), "cy": str(H / 2)}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _stub(method: str) -> StubLocalizer:
    stub = StubLocalizer()
    stub.map.method = method
    return stub


def _post(client, path: str, headers=None):
    return client.post(
        path, files={"image": ("q.png", png_bytes(), "image/png")}, data=INTRINSICS, headers=headers or AUTH
    )


@pytest.fixture
def two_maps():
    first, second = _stub("crossfire-lite"), _stub("crossfire")
    app = create_app(first, token=TOKEN, name="lobby", more_maps={"floor2": second})
    return TestClient(app, raise_server_exceptions=False), first, second


def test_maps_are_listed_described_and_answer_by_name(two_maps):
    client, first, second = two_maps
    listing = client.get("/maps", headers=AUTH).json()
    assert listing["default"] == "lobby" and [m["name"] for m in listing["maps"]] == ["lobby", "floor2"]
    assert [m["method"] for m in listing["maps"]] == ["crossfire-lite", "crossfire"]
    assert all(m["map_ready"] for m in listing["maps"]) and listing["loading"] == []
    described = client.get("/maps/floor2", headers=AUTH).json()
    assert described["name"] == "floor2" and described["method"] == "crossfire" and "conventions" in described
    assert client.get("/map", headers=AUTH).json()["name"] == "lobby"  # the single-map route: the default map
    answer = _post(client, "/maps/floor2/localize")
    assert answer.status_code == 200 and answer.json()["map"] == "floor2"
    assert len(second.calls) == 1 and not first.calls
    answer = _post(client, "/localize")
    assert answer.status_code == 200 and answer.json()["map"] == "lobby" and len(first.calls) == 1
    covariance = np.asarray(answer.json()["covariance"])
    assert covariance.shape == (6, 6) and np.allclose(covariance, covariance.T)


def test_an_unknown_map_is_404_and_every_named_route_needs_the_token(two_maps):
    client, *_ = two_maps
    for path in ("/maps/nowhere", "/maps/nowhere/localize"):
        method = client.get if path.endswith("nowhere") else client.post
        answer = method(path, headers=AUTH)
        assert answer.status_code == 404 and "not served here" in answer.json()["detail"]
    for path in ("/maps", "/maps/floor2"):
        assert client.get(path).status_code == 401
    assert _post(client, "/maps/floor2/localize", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/maps/new", data={"config": "x/config.yml"}).status_code == 401


def test_each_map_has_its_own_health(two_maps):
    client, first, second = two_maps
    second.crash = True
    for _ in range(app_module.CRASHES_UNAVAILABLE):
        assert _post(client, "/maps/floor2/localize").status_code == 500
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["maps"] == {"lobby": True, "floor2": False}
    listed = {m["name"]: m for m in client.get("/maps", headers=AUTH).json()["maps"]}
    assert listed["floor2"]["status"] == "unavailable" and "the stub crashed" in listed["floor2"]["detail"]
    assert _post(client, "/localize").status_code == 200


def _root_with_maps(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / "maps" / name).mkdir(parents=True)
        (tmp_path / "maps" / name / "config.yml").write_text("stub")
    return tmp_path / "maps"


def test_a_map_is_added_with_the_token_from_under_the_map_root(tmp_path):
    root = _root_with_maps(tmp_path, "b2")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.yml").write_text("stub")
    loaded = []

    def loader(path: Path) -> StubLocalizer:
        loaded.append(path)
        return _stub("crossfire")

    client = TestClient(create_app(StubLocalizer(), token=TOKEN, map_loader=loader, map_root=root))
    answer = client.post("/maps/building2", data={"config": "b2/config.yml"}, headers=AUTH)
    assert answer.status_code == 201 and answer.json()["name"] == "building2"
    assert loaded == [(root / "b2" / "config.yml").resolve()]
    assert _post(client, "/maps/building2/localize").json()["map"] == "building2"
    refused = {
        "taken": (client.post("/maps/building2", data={"config": "b2/config.yml"}, headers=AUTH), 409),
        "outside": (client.post("/maps/x", data={"config": "../outside/config.yml"}, headers=AUTH), 403),
        "absolute outside": (client.post("/maps/x", data={"config": str(tmp_path / "outside/config.yml")}, headers=AUTH), 403),
        "not a config": (client.post("/maps/x", data={"config": "b2"}, headers=AUTH), 404),
        "no config": (client.post("/maps/x", headers=AUTH), 400),
        "bad name": (client.post("/maps/.hidden", data={"config": "b2/config.yml"}, headers=AUTH), 400),
    }  # fmt: skip
    for case, (answer, code) in refused.items():
        assert answer.status_code == code, (case, answer.text)
    assert len(loaded) == 1


def test_without_a_token_or_a_map_root_no_map_can_be_added(tmp_path):
    root = _root_with_maps(tmp_path, "b2")
    for kwargs in ({"map_root": root}, {"token": TOKEN}):
        client = TestClient(create_app(StubLocalizer(), map_loader=lambda path: StubLocalizer(), **kwargs))
        headers = AUTH if "token" in kwargs else {}
        answer = client.post("/maps/b2", data={"config": "b2/config.yml"}, headers=headers)
        assert answer.status_code == 403 and "disabled" in answer.json()["detail"]
        assert "disabled" in client.get("/maps", headers=headers).json()["adding"]


def test_a_map_that_fails_to_load_is_an_error_and_the_name_stays_free(tmp_path):
    root = _root_with_maps(tmp_path, "b2")
    calls = []

    def loader(path: Path) -> StubLocalizer:
        calls.append(path)
        if len(calls) == 1:
            raise CrossfireInputError("the checkpoint is truncated")
        return StubLocalizer()

    client = TestClient(create_app(StubLocalizer(), token=TOKEN, map_loader=loader, map_root=root))
    answer = client.post("/maps/b2", data={"config": "b2/config.yml"}, headers=AUTH)
    assert answer.status_code == 400 and "truncated" in answer.json()["detail"]
    assert client.post("/maps/b2", data={"config": "b2/config.yml"}, headers=AUTH).status_code == 201


def test_the_other_maps_answer_while_one_is_being_loaded(tmp_path):
    """Over real HTTP: the loader is held on an event; meanwhile /maps says it is loading, its route is a 404 that
    says so, and the default map localizes."""
    root = _root_with_maps(tmp_path, "b2")
    release, started = threading.Event(), threading.Event()

    def loader(path: Path) -> StubLocalizer:
        started.set()
        assert release.wait(60), "the test never released the loader"
        return StubLocalizer()

    app = create_app(StubLocalizer(), token=TOKEN, map_loader=loader, map_root=root)
    with serving(app) as url, ThreadPoolExecutor(1) as pool:
        adding = pool.submit(httpx.post, f"{url}/maps/b2", data={"config": "b2/config.yml"}, headers=AUTH, timeout=60)
        assert started.wait(30)
        assert httpx.get(f"{url}/maps", headers=AUTH).json()["loading"] == ["b2"]
        held = httpx.post(
            f"{url}/maps/b2/localize",
            files={"image": ("q.png", png_bytes(), "image/png")},
            data=INTRINSICS,
            headers=AUTH,
        )
        assert held.status_code == 404 and "being loaded" in held.json()["detail"]
        answer = httpx.post(
            f"{url}/localize", files={"image": ("q.png", png_bytes(), "image/png")}, data=INTRINSICS, headers=AUTH
        )
        assert answer.status_code == 200 and answer.json()["map"] == "default"
        release.set()
        assert adding.result().status_code == 201
        assert [m["name"] for m in httpx.get(f"{url}/maps", headers=AUTH).json()["maps"]] == ["default", "b2"]
