"""What the routes take from the app (``Depends``): the objects :func:`create_app` keeps in
``app.state``, each as an annotated type (``service: Service``). They are ``async`` so that
FastAPI calls them on the event loop, not in its thread pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from rmcli.config.settings import Settings
from rmcli.serve.admission import Admission
from rmcli.serve.metrics import Metrics
from rmcli.serve.serve_state import ServeState
from rmcli.serve.service import InferenceService

if TYPE_CHECKING:
    from rmcli.serve.url_fetch import UrlPolicy  # imports httpx: only when URL fetching is on


async def service(request: Request) -> InferenceService:
    return request.app.state.service


async def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def serve_state(request: Request) -> ServeState:
    return request.app.state.serve


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def admission(request: Request) -> Admission:
    return request.app.state.admission


async def url_policy(request: Request) -> UrlPolicy | None:
    """The URL fetching policy (None: fetching is off)."""
    return request.app.state.url_policy


Service = Annotated[InferenceService, Depends(service)]
ServeMetrics = Annotated[Metrics, Depends(metrics)]
State = Annotated[ServeState, Depends(serve_state)]
ServeSettings = Annotated[Settings, Depends(settings)]
Admitting = Annotated[Admission, Depends(admission)]
Policy = Annotated["UrlPolicy | None", Depends(url_policy)]
