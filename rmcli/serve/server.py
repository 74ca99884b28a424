"""Running the app under uvicorn: the bound address logged, SIGTERM/Ctrl-C drain, exit 0."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from rmcli.config.settings import Settings
from rmcli.serve.app import ServeState, create_app

log = logging.getLogger("rmcli.serve")


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
    engine = app.state.engine
    log.info(
        "model %s, backend %s: %s, queue %d, deadline %g s",
        engine.default_model.name,
        engine.backend.name,
        engine.describe(),
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
    config = uvicorn.Config(
        app,
        host=settings["serve_host"],
        port=settings["serve_port"],
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=settings["serve_grace"],
        server_header=False,
    )
    DrainingServer(config, app.state.serve).run()
