"""Request bodies on every route: the caller is authenticated before a byte of the body
is read; every body is capped in size (413) and in read time (408), on routes that exist
and on routes added later; and the bytes of bodies held at once in one process are
bounded (503 with Retry-After), released however a request ends. The gateway is the
real app on a real socket, driven with raw sockets (tests/gateway/rawhttp.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway import rawhttp
from tests.gateway.fake_engine import MODEL, FakeEngine
from tests.gateway.servers import serving

KEY = "pk-body-limit-tests-0123456789"
ADMIN = "admin-token-for-body-limit-tests-0123456789"
CAP = 65_536  # limits.max_body_bytes in these tests
BODY_READ_S = 1.0
BOUND_S = 5.0  # "at once" and "never hangs", generous on a loaded machine
KEY_ROUTE = "/admin/keys/{key_id}"
# The routes that take a body today, with the credential each needs.
BODY_ROUTES = [
    pytest.param("POST", "/v1/completions", id="completions"),
    pytest.param("POST", "/v1/chat/completions", id="chat"),
    pytest.param("POST", "/v1/files", id="files-upload"),
    pytest.param("POST", "/v1/batches", id="batches-create"),
    pytest.param("POST", "/admin/keys", id="admin-create"),
    pytest.param("PATCH", KEY_ROUTE, id="admin-update"),
]


@dataclass
class Gateway:
    app: FastAPI
    url: str
    port: int
    key_id: str  # a stored key, for the routes that name one


def _settings(engine_url: str, buffered: int) -> GatewaySettings:
    return GatewaySettings(
        engine_url=engine_url,
        api_keys=[KEY],
        admin_token=ADMIN,
        limits={"max_body_bytes": CAP, "body_read_s": BODY_READ_S,
                "max_buffered_body_bytes": buffered},
        # Many refusals without a credential come from this one address.
        rate_limits={"auth_failures_per_ip": 100_000},
    )  # fmt: skip


@contextmanager
def _gateway(
    buffered: int, add_routes: Callable[[FastAPI], None] | None = None
) -> Iterator[Gateway]:
    with serving(FakeEngine().app) as engine_url:
        app = create_app(_settings(engine_url, buffered))
        if add_routes is not None:
            add_routes(app)
        with serving(app) as url:
            created = httpx.post(url + "/admin/keys", json={"name": "target"}, headers=_admin())
            assert created.status_code == 201
            yield Gateway(app, url, int(url.rsplit(":", 1)[1]), created.json()["id"])


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    with _gateway(buffered=16 * CAP) as running:
        yield running


@pytest.fixture(scope="module")
def tight() -> Iterator[Gateway]:
    """A gateway that may hold exactly one body of the largest size at a time."""
    with _gateway(buffered=CAP) as running:
        yield running


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def _credential(path: str) -> list[tuple[str, str]]:
    token = ADMIN if path.startswith("/admin") else KEY
    return [("authorization", f"Bearer {token}")]


def _head(method: str, path: str, length: int | None, auth: bool = True, key_id: str = "") -> bytes:
    """A request head; ``length`` None means a chunked body."""
    if length is None:
        framing = ("transfer-encoding", "chunked")
    else:
        framing = ("content-length", str(length))
    headers = [("content-type", "application/json"), framing]
    headers += _credential(path) if auth else []
    target = path.format(
        key_id=key_id, name="engine-0", response_id="resp_0", file_id="file-0", batch_id="batch_0"
    )
    return rawhttp.head(method, target, headers)


def _padded(size: int, document: bytes = b'{"name": "padded"}') -> bytes:
    """A valid JSON body of exactly ``size`` bytes (whitespace after the document)."""
    return document + b" " * (size - len(document))


def _error(answer: rawhttp.Answer) -> dict[str, object]:
    error = json.loads(answer.body)["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    return error


# The caller comes first


@pytest.mark.parametrize("framing", ["declared", "chunked"])
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_large_body_without_a_credential_is_refused_401_before_it_is_read(
    gateway: Gateway, method: str, path: str, framing: str
) -> None:
    size = 64 * 1_048_576
    body = b" " * size if framing == "declared" else rawhttp.chunked(b" " * size, 262_144)
    request_head = _head(method, path, size if framing == "declared" else None, auth=False,
                         key_id=gateway.key_id)  # fmt: skip
    answer = rawhttp.exchange(gateway.port, request_head, body, step=262_144, linger_s=1.0)
    assert answer.status == 401
    # Answered on the head: no more was sent than the kernel's and uvicorn's buffers
    # take while the answer is on its way (today's admin routes read all 64 MiB first).
    assert answer.sent < 8 * 1_048_576
    assert answer.closed, "the connection must close, so the rest is never read"


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_trickled_body_without_a_credential_is_refused_401_at_once_and_not_held(
    gateway: Gateway, method: str, path: str
) -> None:
    request_head = _head(method, path, 10_000, auth=False, key_id=gateway.key_id)
    answer = rawhttp.exchange(gateway.port, request_head, b" " * 10_000, trickle_s=0.05,
                              wait_s=BOUND_S, linger_s=1.0)  # fmt: skip
    assert answer.status == 401
    assert answer.elapsed < BODY_READ_S  # on the head, not after the body-read time
    assert _error(answer)["type"] == "authentication_error"
    assert answer.closed, "a client trickling on must not hold the connection"


# Caps on an authenticated body


@pytest.mark.parametrize("framing", ["declared", "chunked"])
@pytest.mark.parametrize(("method", "path"), BODY_ROUTES[3:])
def test_an_admin_body_over_the_cap_is_a_413(
    gateway: Gateway, method: str, path: str, framing: str
) -> None:
    body = _padded(4 * CAP if framing == "chunked" else CAP + 1)
    length = len(body) if framing == "declared" else None
    data = body if framing == "declared" else rawhttp.chunked(body)
    request_head = _head(method, path, length, key_id=gateway.key_id)
    answer = rawhttp.exchange(gateway.port, request_head, data, step=16384, wait_s=BOUND_S)
    assert answer.status == 413
    assert _error(answer)["code"] == "request_too_large"
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES[3:])
def test_a_trickled_admin_body_is_a_408_within_the_body_read_time(
    gateway: Gateway, method: str, path: str
) -> None:
    request_head = _head(method, path, 10_000, key_id=gateway.key_id)
    answer = rawhttp.exchange(gateway.port, request_head, _padded(10_000), trickle_s=0.05,
                              wait_s=BOUND_S)  # fmt: skip
    assert answer.status == 408
    assert _error(answer)["code"] == "request_timeout"
    assert BODY_READ_S * 0.9 <= answer.elapsed < BOUND_S
    assert answer.headers["connection"] == "close"


INVALID_ADMIN_BODIES = [
    pytest.param("PATCH", b'{"rpm": 0}', "rpm", "Input should be greater than 0", id="rpm-zero"),
    pytest.param("PATCH", b'{"name": ""}', "name", "String should have at least 1 character",
                 id="empty-name"),
    pytest.param("PATCH", b'{"metadata": {"a": 1}}', "metadata.a", "Input should be a valid "
                 "string", id="nested-field"),
    pytest.param("POST", b"{}", "name", "Field required", id="create-without-name"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "raw", "param", "message"), INVALID_ADMIN_BODIES)
def test_an_invalid_admin_body_is_the_400_it_always_was(
    gateway: Gateway, method: str, raw: bytes, param: str | None, message: str
) -> None:
    path = f"/admin/keys/{gateway.key_id}" if method == "PATCH" else "/admin/keys"
    headers = {**_admin(), "content-type": "application/json"}
    response = httpx.request(method, gateway.url + path, content=raw, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"error": {"message": f"Invalid request: {message}.",
                                          "type": "invalid_request_error", "param": param,
                                          "code": None}}  # fmt: skip


@pytest.mark.parametrize("raw", [b'{"rpm": 5', b"[1]", b"", b"[" * 50_000,
                                 b'{"expires_at": NaN}'],
                         ids=["truncated", "not-an-object", "empty", "50k-nested-arrays",
                              "nan"])  # fmt: skip
def test_an_admin_body_that_is_not_a_json_object_is_a_400_and_changes_nothing(
    gateway: Gateway, raw: bytes
) -> None:
    path = f"/admin/keys/{gateway.key_id}"
    before = httpx.get(gateway.url + path, headers=_admin()).json()
    headers = {**_admin(), "content-type": "application/json"}
    response = httpx.patch(gateway.url + path, content=raw, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert httpx.get(gateway.url + path, headers=_admin()).json() == before


# Every route, and routes added later


def _body_routes(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in app.routes
        for method in getattr(route, "methods", None) or ()
        if method not in ("GET", "HEAD")
    )


def test_every_route_caps_the_body_it_reads_and_reads_none_before_the_caller(
    gateway: Gateway,
) -> None:
    """Every route of the app, with every method that may carry a body: an over-cap body
    is refused 413, or (a route that takes no body) answered without being read and the
    connection closed. A route added to the app is in this loop without anyone listing
    it."""
    refused = set()
    for method, path in _body_routes(gateway.app):
        for framing in ("declared", "chunked"):
            # Larger than the socket buffers: a route that does not read it answers
            # before all of it could be sent.
            body = _padded(16 * 1_048_576)
            length = len(body) if framing == "declared" else None
            data = body if framing == "declared" else rawhttp.chunked(body)
            request_head = _head(method, path, length, key_id=gateway.key_id)
            answer = rawhttp.exchange(gateway.port, request_head, data, step=16384,
                                      wait_s=BOUND_S)  # fmt: skip
            assert answer.status is not None, (method, path, framing)
            assert answer.headers["connection"] == "close", (method, path, framing)
            if answer.status == 413:
                refused.add((method, path))
            else:
                assert answer.sent < len(data), (method, path, framing, answer.status)
    assert refused >= {("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                       ("POST", "/admin/keys"), ("PATCH", KEY_ROUTE)}  # fmt: skip


def _add_route_whose_body_fastapi_reads(app: FastAPI) -> None:
    @app.post("/added-later")
    async def added_later(payload: dict[str, str]) -> dict[str, str]:
        return payload


def test_a_route_added_later_is_capped_even_when_fastapi_reads_its_body() -> None:
    with _gateway(16 * CAP, _add_route_whose_body_fastapi_reads) as running:
        assert httpx.post(running.url + "/added-later", json={"a": "b"}).json() == {"a": "b"}
        declared = rawhttp.exchange(running.port, _head("POST", "/added-later", CAP + 1),
                                    _padded(CAP + 1, b"{}"), wait_s=BOUND_S)  # fmt: skip
        assert declared.status == 413
        chunks = rawhttp.chunked(_padded(4 * CAP, b"{}"))
        counted = rawhttp.exchange(running.port, _head("POST", "/added-later", None), chunks,
                                   step=16384, wait_s=BOUND_S)  # fmt: skip
        assert counted.status == 413
        assert _error(counted)["code"] == "request_too_large"
        slow = rawhttp.exchange(
            running.port,
            _head("POST", "/added-later", 10_000),
            _padded(10_000, b"{}"),
            trickle_s=0.05,
            wait_s=BOUND_S,
        )
        assert slow.status == 408


# Bodies held at once, in one process


@contextmanager
def _held(gateway: Gateway, size: int) -> Iterator[None]:
    """An authenticated admin request whose body (``size`` bytes declared) is being read
    and never completes, until the block ends (then the client leaves)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=BOUND_S) as sock:
        sock.sendall(_head("POST", "/admin/keys", size) + b'{"name": ')
        yield


def _poll(call: Callable[[], httpx.Response], status: int, wait_s: float = 3.0) -> httpx.Response:
    """``call()`` again until it answers ``status`` or ``wait_s`` passes; the last answer."""
    deadline = time.monotonic() + wait_s
    response = call()
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(0.05)
        response = call()
    return response


def _create(gateway: Gateway, size: int) -> httpx.Response:
    headers = {**_admin(), "content-type": "application/json"}
    return httpx.post(gateway.url + "/admin/keys", content=_padded(size), headers=headers)


def test_a_body_over_the_process_wide_buffer_is_a_503_until_bodies_are_released(
    tight: Gateway,
) -> None:
    with _held(tight, CAP):
        answer = _poll(lambda: _create(tight, 100), 503)
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["connection"] == "close"
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "service_unavailable"
    # The held request ended when its client left: its bytes are free again.
    assert _poll(lambda: _create(tight, CAP), 201).status_code == 201


def _endings(gateway: Gateway) -> None:
    """One request ending each way a request can end after its body was (partly) read."""
    port, key_id = gateway.port, gateway.key_id
    assert _create(gateway, CAP).status_code == 201
    invalid = httpx.post(gateway.url + "/admin/keys", content=b"{" * CAP, headers=_admin())
    assert invalid.status_code == 400
    over = rawhttp.exchange(port, _head("POST", "/admin/keys", None),
                            rawhttp.chunked(_padded(2 * CAP)), step=16384)  # fmt: skip
    assert over.status == 413
    declared = rawhttp.exchange(port, _head("PATCH", KEY_ROUTE, CAP + 1, key_id=key_id),
                                _padded(CAP + 1))  # fmt: skip
    assert declared.status == 413
    slow = rawhttp.exchange(port, _head("POST", "/admin/keys", 1000), _padded(1000),
                            trickle_s=0.05, wait_s=BOUND_S)  # fmt: skip
    assert slow.status == 408
    with socket.create_connection(("127.0.0.1", port)) as sock:  # the client leaves mid-body
        sock.sendall(_head("POST", "/admin/keys", CAP) + b'{"name": ')
        time.sleep(0.1)
    missing = httpx.patch(gateway.url + "/admin/keys/key_0", json={"rpm": 5}, headers=_admin())
    assert missing.status_code == 404
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {KEY}"}) as api:
        body = {"model": MODEL, "prompt": "fine"}
        assert api.post("/v1/completions", json=body).status_code == 200
        with api.stream("POST", "/v1/completions", json={**body, "stream": True}) as stream:
            assert stream.status_code == 200
            stream.read()


def test_buffered_bytes_are_released_however_a_request_ends(tight: Gateway) -> None:
    for _ in range(2):
        _endings(tight)
    # All of it is free again: a body of the whole budget is taken...
    assert _poll(lambda: _create(tight, CAP), 201).status_code == 201
    # ...and the count is exact, not off: while one holds it all, one more byte is refused.
    with _held(tight, CAP):
        assert _poll(lambda: _create(tight, 100), 503).status_code == 503
