"""A bounded fuzz run over the server's endpoints, on a stub localizer: whatever the form fields, image bytes and
headers of the OpenAPI schema's requests, the answer is a named 4xx or a 200, never a 500 or a hang."""

from __future__ import annotations

import json
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from crossfire_ns.server.app import create_app
from tests.server.stub import TOKEN, H, StubLocalizer, W, image_bytes, png_bytes

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
"""A fixed, bounded run (a few seconds): the same examples on every machine."""
FIELDS = ("fx", "fy", "cx", "cy", "prior", "sequence")

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["nan", "-inf", "1e308", "0", "-0", "", " ", "70", "40", "30", "0x10", "1_0"]),
    st.text(max_size=30),
)
priors = st.one_of(
    st.text(max_size=60),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=5)),
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=20,
    ).map(json.dumps),
    st.integers(1, 200).map(lambda depth: "[" * depth + "]" * depth),
)
images = st.one_of(
    st.sampled_from([png_bytes(), png_bytes(mode="RGBA"), image_bytes("JPEG"), image_bytes("GIF"), b""]),
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda tail: png_bytes()[:60] + tail),  # a PNG cut short and continued with noise
    st.binary(max_size=200).map(lambda tail: b"\xff\xd8\xff" + tail),  # a JPEG signature and noise
)


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(StubLocalizer(), max_upload_bytes=100_000, token=TOKEN), raise_server_exceptions=False)


def test_the_fuzzed_fields_are_the_schemas(client):
    schema = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    body = schema["paths"]["/localize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    properties = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["properties"]
    assert set(properties) == {"image", *FIELDS}
    assert set(schema["paths"]) == {
        "/health",
        "/map",
        "/localize",
        "/maps",
        "/maps/{map_name}",
        "/maps/{map_name}/localize",
    }
    named = schema["paths"]["/maps/{map_name}/localize"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert schema["components"]["schemas"][named["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"] == properties


@FUZZ
@given(
    image=st.one_of(st.none(), images),
    fields=st.dictionaries(st.sampled_from(FIELDS), st.one_of(numbers, priors), max_size=6),
    authorized=st.booleans(),
)
def test_localize_answers_every_request_with_a_named_status(client, image, fields, authorized):
    headers = {"Authorization": f"Bearer {TOKEN}"} if authorized else {}
    files = None if image is None else {"image": ("q.png", image, "image/png")}
    answer = client.post("/localize", files=files, data=fields, headers=headers)
    if not authorized:
        assert answer.status_code == 401
        return
    assert answer.status_code in (200, 400, 413, 422), (answer.status_code, answer.text)
    body = answer.json()
    if answer.status_code == 200:
        assert body["status"] == "localized" and len(body["transform_matrix"]) == 4
    else:
        assert body["detail"]


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(
            ["/health", "/map", "/localize", "/docs", "/openapi.json", "/maps", "/maps/default", "/maps/x/localize"]
        ),
        st.text(alphabet=string.ascii_letters + string.digits + "/._-%~", max_size=20),
    ),
    headers=st.dictionaries(
        st.sampled_from(["content-type", "content-length", "authorization", "origin", "x-any"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        max_size=3,
    ),
)
def test_any_method_path_and_header_gets_an_answer_not_a_crash(client, method, path, headers):
    url = "/" + path.lstrip("/")
    try:
        answer = client.request(method, url, headers=headers)
    except (ValueError, httpx.InvalidURL):  # httpx refuses to build the request: nothing reached the server
        return
    assert answer.status_code < 500, (method, url, headers, answer.status_code, answer.text)


def test_a_sane_request_among_the_fuzz_is_answered(client):
    data = {"fx": "70", "fy": "70", "cx": str(W / 2), "cy": str(H / 2)}
    answer = client.post(
        "/localize",
        files={"image": ("q.png", png_bytes(), "image/png")},
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 200 and answer.json()["status"] == "localized"
