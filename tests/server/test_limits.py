"""The server's limits, authentication and input bounds, on a stub localizer (no map): every hostile request gets
its 4xx before work, /health answers while a request runs, a full queue says when to retry."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from crossfire_ns.server import app as app_module
from crossfire_ns.server.app import FORM_BYTES, create_app, json_depth
from crossfire_ns.server.guard import LOOPBACK_HOSTS, host_name
from tests.server.stub import TOKEN, H, StubLocalizer, W, image_bytes, png_bytes, serving

INTRINSICS = {"fx": "70", "fy": "70", "cx": str(W / 2), "cy": str(H / 2)}


def _client(stub=None, **kwargs) -> TestClient:
    return TestClient(create_app(stub or StubLocalizer(), **kwargs), raise_server_exceptions=False)


def _post(client, image=None, data=None, headers=None, name="q.png"):
    files = {"image": (name, png_bytes() if image is None else image, "image/png")}
    return client.post("/localize", files=files, data=data or {}, headers=headers or {})


def _wait_for(condition, what: str, seconds: float = 30.0) -> None:
    """Poll ``condition`` until it holds (a state to reach, not a duration to sleep); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.01)


def _raw(url: str, request: bytes, then=None) -> bytes:
    """Send raw bytes over one connection (``then`` may send more) and read until the server closes or answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request)
        if then is not None:
            then(conn)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


# --- limits before work -----------------------------------------------------------------------------------------


def test_a_declared_size_over_the_cap_is_413_without_a_byte_of_the_body_read():
    stub = StubLocalizer()
    app = create_app(stub, max_upload_bytes=1000)
    reads, sent = [], []

    async def receive():
        reads.append(1)
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/localize", "raw_path": b"/localize", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-length", str(10**12).encode()),
                    (b"content-type", b"multipart/form-data; boundary=x")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8750),
    }  # fmt: skip
    anyio.run(app, scope, receive, send)
    assert reads == [] and not stub.calls
    assert sent[0]["status"] == 413 and b"larger than" in sent[1]["body"]


@pytest.fixture(scope="module")
def small_server():
    """uvicorn on a stub with a 1000-byte upload cap and a 0.5 s body pause limit."""
    stub = StubLocalizer()
    with serving(create_app(stub, max_upload_bytes=1000, body_timeout=0.5)) as url:
        yield url, stub


def test_over_http_a_declared_size_over_the_cap_is_refused_from_the_headers(small_server):
    url, stub = small_server
    head = (
        b"POST /localize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 1000000000000\r\n\r\n"
    )
    answer = _raw(url, head)  # no body is sent at all: the answer comes from the headers
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than" in answer
    assert not stub.calls and httpx.get(f"{url}/health").status_code == 200


def test_over_http_a_chunked_body_is_cut_at_the_cap(small_server):
    url, stub = small_server
    part = b'--x\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\nContent-Type: image/png\r\n\r\n'
    body = part + b"x" * (1000 + FORM_BYTES + 1 - len(part))  # one byte over the cap, and no end
    head = (
        b"POST /localize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body
    )
    answer = _raw(url, head)
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than" in answer
    assert not stub.calls


def test_over_http_a_stalled_body_is_dropped_with_408(small_server):
    url, stub = small_server
    head = (
        b"POST /localize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        b"Content-Length: 500\r\n\r\n--x\r\n"
    )
    answer = _raw(url, head)  # 5 of 500 bytes, then nothing
    assert answer.startswith(b"HTTP/1.1 408") and b"paused" in answer
    assert not stub.calls and httpx.get(f"{url}/health").status_code == 200


def test_an_upload_over_the_image_cap_is_413():
    answer = _post(_client(max_upload_bytes=1000), image=b"\x89PNG\r\n\x1a\n" + b"x" * 2000)
    assert answer.status_code == 413 and "larger than the 1000 bytes" in answer.json()["detail"]


def test_an_image_whose_header_declares_too_many_pixels_is_refused_before_decoding(monkeypatch):
    stub = StubLocalizer()
    decoded = []
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: decoded.append(1))
    answer = _post(_client(stub, max_pixels=W * H - 1), image=png_bytes())
    assert answer.status_code == 413 and f"{W}x{H}" in answer.json()["detail"]
    assert not decoded and not stub.calls


def test_the_pixel_cap_follows_max_image_side():
    client = _client(StubLocalizer(max_image_side=4))  # 16 x 4 = 64 pixels a side at most
    assert client.get("/map").json()["max_pixels"] == 64 * 64
    assert _post(client, image=png_bytes(65, 65)).status_code == 413
    assert _post(client, image=png_bytes(64, 64), data={}).status_code == 200


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "WEBP"])
def test_only_png_and_jpeg_are_decoded(fmt):
    stub = StubLocalizer()
    answer = _post(_client(stub), image=image_bytes(fmt), name=f"q.{fmt.lower()}")
    assert answer.status_code == 400 and "neither PNG nor JPEG" in answer.json()["detail"], answer.text
    assert not stub.calls


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_png_and_jpeg_are_decoded(mode):
    stub = StubLocalizer()
    client = _client(stub)
    assert _post(client, image=png_bytes(mode=mode), data=INTRINSICS).status_code == 200
    assert _post(client, image=image_bytes("JPEG"), name="q.jpg", data=INTRINSICS).status_code == 200
    assert stub.calls[0]["shape"] == (H, W, 3)


def test_health_answers_while_a_request_runs_and_a_full_queue_says_when_to_retry():
    stub = StubLocalizer()
    stub.gate = threading.Event()
    with serving(create_app(stub, queue_size=1)) as url:

        def call(_):
            files = {"image": ("q.png", png_bytes(), "image/png")}
            return httpx.post(f"{url}/localize", files=files, data=INTRINSICS, timeout=60).status_code

        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(call, i) for i in range(2)]
            _wait_for(lambda: httpx.get(f"{url}/health").json()["pending"] == 2, "two requests in the server")
            health = httpx.get(f"{url}/health", timeout=5)  # one localizing (held), one waiting
            assert health.status_code == 200 and health.json()["map_ready"] is True
            busy = httpx.post(f"{url}/localize", files={"image": ("q.png", png_bytes(), "image/png")}, timeout=60)
            assert busy.status_code == 503 and "busy" in busy.json()["detail"]
            assert int(busy.headers["Retry-After"]) >= 1
            stub.gate.set()
            assert [f.result() for f in held] == [200, 200]
        assert httpx.get(f"{url}/health").json()["pending"] == 0


def test_health_says_the_map_cannot_answer_after_crashes_in_a_row():
    stub = StubLocalizer()
    client = _client(stub)
    stub.crash = True
    for _ in range(app_module.CRASHES_UNAVAILABLE):
        assert _post(client, data=INTRINSICS).status_code == 500
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["map_ready"] is False
    assert "the stub crashed" in health.json()["detail"]
    stub.crash = False
    assert _post(client, data=INTRINSICS).status_code == 200
    assert client.get("/health").json() == {"status": "ok", "map_ready": True, "pending": 0, "maps": {"default": True}}


# --- authentication ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/map", "/docs", "/openapi.json"])
def test_with_a_token_every_path_but_health_needs_it(path):
    client = _client(token=TOKEN)
    assert client.get("/health").status_code == 200
    missing = client.get(path)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "missing token" in missing.json()["detail"]
    wrong = client.get(path, headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
    assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_the_token_localize_does_no_work():
    stub = StubLocalizer()
    client = _client(stub, token=TOKEN)
    assert _post(client, data=INTRINSICS).status_code == 401
    assert _post(client, data=INTRINSICS, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert not stub.calls
    assert _post(client, data=INTRINSICS, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_on_loopback_other_hosts_and_web_pages_of_other_origins_are_refused():
    client = TestClient(create_app(StubLocalizer(), allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8750")
    assert client.get("/map").status_code == 200
    assert client.get("/map", headers={"Host": "localhost:8750"}).status_code == 200
    rebound = client.get("/map", headers={"Host": "attacker.example:8750"})  # DNS rebinding
    assert rebound.status_code == 400 and "not served here" in rebound.json()["detail"]
    page = _post(client, data=INTRINSICS, headers={"Origin": "http://attacker.example"})
    assert page.status_code == 403 and "origin" in page.json()["detail"]
    assert client.get("/health", headers={"Origin": "http://127.0.0.1:8750"}).status_code == 200


def test_host_names():
    assert host_name("127.0.0.1:8750") == "127.0.0.1" and host_name("[::1]:8750") == "::1"
    assert host_name("LocalHost") == "localhost" and host_name("::1") == "::1"


def test_map_names_no_path_on_the_server():
    info = _client().get("/map").json()
    text = json.dumps(info)
    assert "/secret" not in text and "home" not in text
    assert info["run"] == "run" and info["checkpoint"] == "step-000000100.ckpt"
    assert info["image_formats"] == ["PNG", "JPEG"]


# --- bounded inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"fx": "nan"}, "not finite"),
        ({"fx": "inf"}, "not finite"),
        ({"fx": "1e308"}, "not a focal length"),
        ({"fx": "0.5"}, "not a focal length"),
        ({"fy": "-70"}, "positive"),
        ({"cx": "1e9"}, "principal point"),
        ({"cy": "-1"}, "principal point"),
        ({"cx": "x" * 10_000}, "not a number"),
    ],
)
def test_intrinsics_must_fit_the_image(fields, words):
    stub = StubLocalizer()
    answer = _post(_client(stub), data={**INTRINSICS, **fields})
    assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    assert len(answer.text) < 2000 and not stub.calls


def _rotated(angle: float, scale: float = 1.0) -> list:
    c, s = np.cos(angle), np.sin(angle)
    pose = np.eye(4)
    pose[:3, :3] = scale * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    pose[:3, 3] = [1, 2, 3]
    return pose.tolist()


@pytest.mark.parametrize(
    "prior, words",
    [
        ("[" * 100_000 + "]" * 100_000, "characters"),
        ("[" * 3 + "1" + "]" * 3, "nested 3 deep"),
        ('{"a": [[[1]]]}', "nested 4 deep"),
        ("[[1, 2]]", "4x4"),
        ("not json", "prior must be"),
        (json.dumps(_rotated(0.3, scale=2.0)), "not a rotation"),
        (json.dumps([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]]), "not a rotation"),  # a mirror
        (json.dumps([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
        ("[[NaN, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]", "finite"),
    ],
)
def test_a_prior_must_be_a_small_rigid_matrix(prior, words):
    stub = StubLocalizer()
    answer = _post(_client(stub), data={**INTRINSICS, "prior": prior})
    assert answer.status_code == 400 and words in answer.json()["detail"], answer.text
    assert not stub.calls


def test_a_rigid_prior_is_used():
    stub = StubLocalizer()
    answer = _post(_client(stub), data={**INTRINSICS, "prior": json.dumps(_rotated(0.3))})
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["transform_matrix"], _rotated(0.3))


def test_json_depth_skips_strings():
    assert json_depth('[["[[[", "\\"[["]]') == 2 and json_depth("1") == 0


def test_sequences_are_bounded(monkeypatch):
    monkeypatch.setattr(app_module, "MAX_SEQUENCES", 2)
    stub = StubLocalizer()
    client = _client(stub)
    for name in ("s0", "s1", "s0", "s2"):
        assert _post(client, data={**INTRINSICS, "sequence": name}).status_code == 200
    assert stub.ended == ["s1"]  # s0 was used again, so s1 was the one unused longest
    answer = _post(client, data={**INTRINSICS, "sequence": "s" * 1000})
    assert answer.status_code == 400 and "sequence" in answer.json()["detail"]
