"""What every request passes before the app sees it (an ASGI middleware): checks on its headers answered without
reading a byte of its body, and a body counted and timed as the app reads it.

In order: a Host (and a browser's Origin) outside ``allowed_hosts`` is refused (400, 403: DNS rebinding and web
pages posting to localhost); with a token, a request without ``Authorization: Bearer <token>`` gets 401 (``/health``
excepted); a declared ``Content-Length`` over the cap gets 413. A body sent without a length (chunked) is cut with a
413 once it passes the cap, and one that pauses longer than ``body_timeout`` between chunks with a 408.
"""

from __future__ import annotations

import hmac
from typing import Iterable, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host names a server bound to this machine only answers to."""
OPEN_PATHS = ("/health",)
"""Paths answered without the token (a load balancer's probe carries none)."""


def host_name(value: str) -> str:
    """The host of a ``Host`` header value (``name``, ``name:port``, ``[v6]:port``), lower case, without the port."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def bearer_token(headers: Headers) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, None without one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RequestGuard:
    """The checks above, as an ASGI middleware around ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        token: Optional[str] = None,
        allowed_hosts: Optional[Sequence[str]] = None,
        body_timeout: float = 30.0,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.token = None if token is None else token.encode("utf-8")
        self.allowed_hosts = None if allowed_hosts is None else {host_name(h) for h in allowed_hosts}
        self.body_timeout = body_timeout
        self.open_paths = tuple(open_paths)

    def refusal(self, scope: Scope) -> Optional[Tuple[int, str, dict]]:
        """``(status, detail, headers)`` for a request its headers alone refuse; None for one that may go on."""
        headers = Headers(scope=scope)
        if self.allowed_hosts is not None:
            host = host_name(headers.get("host", ""))
            if host not in self.allowed_hosts:
                return 400, f"Host {host!r} is not served here (serving {', '.join(sorted(self.allowed_hosts))})", {}
            origin = headers.get("origin")
            if origin is not None and host_name(urlsplit(origin).netloc or origin) not in self.allowed_hosts:
                return 403, f"requests from web pages of another origin ({origin}) are refused", {}
        if self.token is not None and scope.get("path", "") not in self.open_paths:
            given = bearer_token(headers)
            if given is None or not hmac.compare_digest(given.encode("utf-8"), self.token):
                detail = "missing token" if given is None else "wrong token"
                return (
                    401,
                    f"{detail}: send 'Authorization: Bearer <token>' (the server's CROSSFIRE_SERVER_TOKEN)",
                    {"WWW-Authenticate": "Bearer"},
                )
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return 400, f"Content-Length {declared!r} is not a byte count", {}
            if int(declared) > self.max_body_bytes:
                return (
                    413,
                    f"the request's body ({declared} bytes) is larger than the {self.max_body_bytes} accepted",
                    {},
                )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is not None:
            status, detail, headers = refused  # the connection closes: an unread body is not drained
            headers = {**headers, "Connection": "close"}
            await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
            return
        received = 0
        body_done = False
        answered = False  # by this guard: what the app sends afterwards is dropped
        started = False

        async def answer(status: int, detail: str) -> Message:
            nonlocal answered
            if not started:
                await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(
                    scope, receive, send
                )
            answered = True
            return {"type": "http.disconnect"}

        async def counted_receive() -> Message:
            nonlocal received, body_done
            if answered:
                return {"type": "http.disconnect"}
            if body_done:  # what follows the body is the client's disconnect: no timer on it
                return await receive()
            with anyio.move_on_after(self.body_timeout) as waited:
                message = await receive()
            if waited.cancelled_caught:
                return await answer(408, f"the request's body paused for more than {self.body_timeout:g} s")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    return await answer(413, f"the request's body is larger than the {self.max_body_bytes} accepted")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            # the app failed on the body this guard cut short; the request is answered already
