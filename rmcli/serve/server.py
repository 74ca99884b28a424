"""Running the app under uvicorn: the bound address logged, SIGTERM/Ctrl-C drain, exit 0, and
connection guards uvicorn lacks: a time limit on request headers, and a cap on the connections
one client address may hold open."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from rmcli.config.settings import Settings
from rmcli.serve.app import create_app
from rmcli.serve.serve_state import ServeState

log = logging.getLogger("rmcli.serve")


class ConnectionGuard:
    """Open connections per client address (shared by a server's connections)."""

    def __init__(self, per_client: int, header_timeout: float, retry_after: int) -> None:
        self.per_client = per_client
        self.header_timeout = header_timeout
        self.retry_after = retry_after
        self.open: Counter[str] = Counter()


def _raw_answer(status: str, reason: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"error": reason}).encode()
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{retry}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a request's headers must arrive within
    ``serve_header_timeout`` seconds of the connection or of the previous answer (408, closed),
    and one client address holds at most ``serve_client_connections`` (503, closed)."""

    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.counted: str | None = None
        self.header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None:
            if self.guard.open[address] >= self.guard.per_client:
                reason = (
                    f"too many connections from {address}: at most {self.guard.per_client} "
                    "(serve_client_connections)"
                )
                transport.write(_raw_answer("503 Service Unavailable", reason, 1))
                transport.close()
                return
            self.guard.open[address] += 1
            self.counted = address
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted is not None:
            self.guard.open[self.counted] -= 1
            if self.guard.open[self.counted] <= 0:
                del self.guard.open[self.counted]
            self.counted = None
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's headers get the same time

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self.header_timer = self.loop.call_later(self.guard.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        self.header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            reason = (
                f"request headers not received within {self.guard.header_timeout:g} s "
                "(serve_header_timeout)"
            )
            self.transport.write(_raw_answer("408 Request Timeout", reason))
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marked draining on the first signal, without re-raising it at exit.

    uvicorn stops accepting, waits up to ``timeout_graceful_shutdown`` for requests in flight,
    then re-raises the signal, which would make the exit status 143; a drained stop is a
    normal end, so ``run`` just returns (a second Ctrl-C still forces the exit).
    """

    def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
        super().__init__(config)
        self.serve_state = state

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            log.info(
                "%s: draining (up to %g s for requests in flight)",
                signal.Signals(sig).name,
                self.config.timeout_graceful_shutdown or 0,
            )
        self.serve_state.draining = True
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        for server in getattr(self, "servers", []):
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("listening on http://%s:%d/", shown, port)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or Ctrl-C, then drain and return."""
    app = create_app(settings)
    service = app.state.service
    log.info(
        "model %s, backend %s: %s, queue %d, deadline %g s",
        service.default_model.name,
        service.backend.name,
        service.describe(),
        settings["serve_queue"],
        settings["serve_deadline"],
    )
    if (
        settings["serve_host"] not in ("127.0.0.1", "localhost", "::1")
        and not settings["serve_token"]
    ):
        log.warning(
            "listening on %s without a token: anyone who can reach it can use it "
            "(set RMCLI_SERVE_TOKEN)",
            settings["serve_host"],
        )
    guard = ConnectionGuard(
        settings["serve_client_connections"],
        settings["serve_header_timeout"],
        settings["serve_retry_after"],
    )
    config = uvicorn.Config(
        app,
        http=functools.partial(GuardedH11Protocol, guard=guard),  # type: ignore[arg-type]
        host=settings["serve_host"],
        port=settings["serve_port"],
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=settings["serve_grace"],
        server_header=False,
    )
    DrainingServer(config, app.state.serve).run()
