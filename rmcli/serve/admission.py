"""Admission: at most as many inference requests inside the server as there are slots plus
queue places (``serve_queue``); one more gets 503 + Retry-After at once. An upload is admitted
by :class:`UploadAdmission` once its whole body has arrived; a URL once fetched, by its route."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from rmcli.serve.http_errors import error_response
from rmcli.serve.metrics import Metrics
from rmcli.serve.middleware import is_upload
from rmcli.serve.serve_state import ServeState


@dataclass
class Admission:
    """Inference requests inside the server: at most ``capacity()`` (slots + queue)."""

    state: ServeState
    metrics: Metrics
    capacity: Callable[[], int]  # a Dask cluster's slots change
    retry_after: int

    def refusal(self) -> str | None:
        """Why one more request cannot come in now (counted as queue_full), or None."""
        capacity = self.capacity()
        if self.state.admitted < capacity:
            return None
        self.metrics.rejected.labels("queue_full").inc()
        return (
            f"busy: {capacity} requests already queued or running "
            f"(inference slots + serve_queue); retry after {self.retry_after} s"
        )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """One admission place, for the time of the block."""
        self.state.admitted += 1
        self.metrics.admitted.inc()
        try:
            yield
        finally:
            self.state.admitted -= 1
            self.metrics.admitted.dec()


class UploadAdmission:
    """Pure ASGI, innermost: an upload (its whole body already read by
    :class:`rmcli.serve.middleware.BodyLimits`) holds an admission place for its time in the
    app, or gets 503 + Retry-After when none is free."""

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_upload(scope):
            await self.app(scope, receive, send)
            return
        reason = self.admission.refusal()
        if reason is not None:
            await error_response(503, reason, self.admission.retry_after)(scope, receive, send)
            return
        with self.admission.held():
            await self.app(scope, receive, send)
