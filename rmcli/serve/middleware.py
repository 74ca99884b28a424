"""The pure-ASGI middlewares in front of the routes, one concern each, outermost first:

:class:`AccessLog` (access log and metrics, with the final status), :class:`HostCheck` (DNS
rebinding), :class:`BearerToken`, :class:`BodyLimits` (413; for uploads 408 too, and the whole
body read before admission); then :class:`rmcli.serve.admission.UploadAdmission`. They are pure
ASGI, so that no body is read before the checks that may refuse it, and an upload's body is
read whole before it takes an admission place.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rmcli.config.settings import Settings
from rmcli.serve.http_errors import error_response
from rmcli.serve.metrics import Metrics
from rmcli.serve.serve_state import ServeState

access_log = logging.getLogger("rmcli.serve.access")

INFERENCE_PATHS = {"/api/remove", "/v1/remove"}
OPEN_PATHS = {"/", "/healthz", "/readyz", "/docs", "/openapi.json", "/favicon.ico"}
ENDPOINTS = INFERENCE_PATHS | OPEN_PATHS | {"/metrics", "/v1/models"}
BODY_GRACE = 2.0  # seconds before serve_min_rate applies to a body


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control and non-ASCII characters and quotes escaped."""
    return text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')


def is_upload(scope: Scope) -> bool:
    """An upload to an inference path: its body is read whole before admission."""
    return scope["path"] in INFERENCE_PATHS and scope["method"] == "POST"


async def drain(receive: Receive, limit: int) -> None:
    """Read (and drop) the body, up to ``limit`` bytes, so the connection stays usable."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return


class AccessLog:
    """Outermost: the request metrics and the access log line, with the final status (499: the
    client went away); a request still unanswered when the drain ends is answered 503."""

    def __init__(self, app: ASGIApp, settings: Settings, state: ServeState, metrics: Metrics):
        self.app = app
        self.state = state
        self.metrics = metrics
        self.retry_after = settings["serve_retry_after"]
        self.enabled = settings["serve_access_log"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["arrived"] = asyncio.get_running_loop().time()  # the deadline counts from here
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        answer = {"status": 500, "sent": 0, "started": False}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["started"] = True
            elif message["type"] == "http.response.body":
                answer["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        except asyncio.CancelledError:
            if not self.state.draining or answer["started"]:
                raise
            # the grace period ended with this request unanswered: a load balancer retries 503
            reason = f"draining: the server is shutting down; retry after {self.retry_after} s"
            response = error_response(503, reason, self.retry_after, close=True)
            await response(scope, receive, send_logged)
        finally:
            status = answer["status"]
            if state.get("client_gone"):
                status = 499
            model = state.get("model", "") if path in INFERENCE_PATHS else ""
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, model, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if self.enabled:
                client = scope.get("client") or ("-", 0)
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + ("?" + query if query and path != "/api/remove" else "")
                access_log.info(
                    '%s "%s %s" %d %d %.3fs%s',
                    client[0],
                    printable(scope["method"]),
                    printable(target, 2000),
                    status,
                    answer["sent"],
                    seconds,
                    f" model={printable(model)}" if model else "",
                )


def allowed_hosts(settings: Settings) -> set[str] | None:
    """Host header names accepted (None: any): ``serve_allowed_hosts``, else on a loopback
    address only loopback names, so a web page cannot reach the server by DNS rebinding."""
    text = settings["serve_allowed_hosts"]
    if text:
        names = {name.strip().lower().strip("[]") for name in text.split(",") if name.strip()}
        return None if "*" in names else names
    host = settings["serve_host"].strip("[]").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return {"localhost", "127.0.0.1", "::1", host} if loopback else None


def _host_name(value: bytes) -> str:
    """The name in a Host header, without its port (``[::1]:7000`` -> ``::1``)."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


class HostCheck:
    """400 for a Host header that does not name this server (:func:`allowed_hosts`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = allowed_hosts(settings)
        self.max_body = settings["serve_max_body"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hosts is not None:
            given = next((v for k, v in scope["headers"] if k == b"host"), None)
            if given is not None and _host_name(given) not in self.hosts:
                await drain(receive, self.max_body)
                reason = (
                    f"Host {given.decode('latin-1')[:100]!r} is not served here "
                    "(serve_allowed_hosts)"
                )
                await error_response(400, reason)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BearerToken:
    """401 without ``Authorization: Bearer <serve_token>`` (when a token is set), except on
    the open paths (the page, health, readiness, the API description)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.token = settings["serve_token"].encode()
        self.max_body = settings["serve_max_body"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.token
            and scope["path"] not in OPEN_PATHS
            and not self._authorised(scope)
        ):
            await drain(receive, self.max_body)
            response = error_response(
                401, "missing or wrong bearer token (Authorization: Bearer …)"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self.token
                )
        return False


class SlowBody(Exception):
    """The body did not arrive within serve_body_timeout or at serve_min_rate."""


class BodyLimits:
    """413 for a body over ``serve_max_body`` (declared or counted). An upload's whole body is
    read here, within ``serve_body_timeout`` and at ``serve_min_rate`` (else 408), then replayed
    to the app; its deadline counts from the body's arrival."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body = settings["serve_max_body"]
        self.body_timeout = settings["serve_body_timeout"]
        self.min_rate = settings["serve_min_rate"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
        elif is_upload(scope):
            await self._upload(scope, receive, send)
        else:
            await self._counted(scope, receive, send)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await self._body(receive)
        except SlowBody as exc:
            await error_response(408, str(exc), close=True)(scope, receive, send)
            return
        if body is None:  # the client went away
            scope["state"]["client_gone"] = True
            return
        if len(body) > self.max_body:
            await self._too_large(scope, receive, send, drain_first=False)
            return
        scope["state"]["arrived"] = asyncio.get_running_loop().time()
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what comes after the body: a disconnect

        await self.app(scope, replay, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other request: its body counted as the app reads it, and 413 instead of the
        app's answer once it passes the limit."""
        received = 0
        over = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if over:  # the app saw a cut body: answer 413 instead of what it says
                    await self._too_large(scope, receive, send, drain_first=False)
                    return
            elif over:
                return
            await send(message)

        await self.app(scope, counted, guarded_send)

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body (cut just past ``max_body``), or None when the client went away;
        SlowBody when it does not arrive within ``body_timeout`` or at ``min_rate``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        chunks: list[bytes] = []
        size = 0
        while True:
            until = start + self.body_timeout
            if self.min_rate:
                until = min(until, start + BODY_GRACE + size / self.min_rate)
            try:
                async with asyncio.timeout_at(until):
                    message = await receive()
            except TimeoutError:
                raise SlowBody(
                    f"request body too slow: {size:,} bytes in {loop.time() - start:.1f} s "
                    f"(serve_body_timeout {self.body_timeout:g} s, serve_min_rate "
                    f"{self.min_rate} bytes/s)"
                ) from None
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            if size > self.max_body or not message.get("more_body"):
                return b"".join(chunks)

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, drain_first: bool = True
    ) -> None:
        if drain_first:
            await drain(receive, self.max_body)
        reason = f"request body over {self.max_body:,} bytes (serve_max_body)"
        await error_response(413, reason, close=not drain_first)(scope, receive, send)
