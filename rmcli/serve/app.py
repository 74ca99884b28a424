"""The ASGI application of ``rmcli serve``: :func:`create_app` (FastAPI on Starlette).

It builds the inference service, metrics, state and admission, keeps them in ``app.state`` for
the routes (:mod:`rmcli.serve.routes`), turns every failure into an HTTP status in one place,
and puts the middlewares of :mod:`rmcli.serve.middleware` and :mod:`rmcli.serve.admission`
in front of the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from rmcli.config.settings import Settings
from rmcli.errors import RmcliError
from rmcli.serve.admission import Admission, UploadAdmission
from rmcli.serve.http_errors import ServeError, error_response, status_of
from rmcli.serve.metrics import Metrics
from rmcli.serve.middleware import AccessLog, BearerToken, BodyLimits, HostCheck, printable
from rmcli.serve.routes import operations, rembg_api, v1_api
from rmcli.serve.serve_state import ServeState
from rmcli.serve.service import InferenceService

if TYPE_CHECKING:
    from rmcli.serve.url_fetch import UrlPolicy  # imports httpx: only when URL fetching is on

log = logging.getLogger("rmcli.serve")


def create_app(settings: Settings) -> FastAPI:
    """The rmcli serve application for resolved ``settings`` (see ``docs/serving.md``)."""
    from rmcli.images.decoding import quiet_pillow_warnings

    quiet_pillow_warnings()
    service = _service_for(settings)
    metrics = Metrics(service)
    state = ServeState()
    admission = Admission(state, metrics, service.capacity, settings["serve_retry_after"])
    app = FastAPI(
        title="rmcli serve",
        summary="Remove image backgrounds with ONNX models under a fixed core budget.",
        version=_version(),
        lifespan=_lifespan,
        docs_url=None,  # Swagger UI would come from a CDN: /docs is a local page instead
        redoc_url=None,
        middleware=_middlewares(settings, state, metrics, admission),
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    app.state.serve = state
    app.state.admission = admission
    app.state.url_policy = _url_policy(settings)
    _handle_errors(app, metrics)
    app.include_router(operations.router)
    app.include_router(rembg_api.router)
    app.include_router(v1_api.router)
    return app


def _middlewares(
    settings: Settings, state: ServeState, metrics: Metrics, admission: Admission
) -> list[Middleware]:
    """Outermost first: CORS (when configured, so that refusals carry its headers too), access
    log and metrics (they see every final status), Host, token, body limits, admission."""
    stack = [
        Middleware(AccessLog, settings=settings, state=state, metrics=metrics),
        Middleware(HostCheck, settings=settings),
        Middleware(BearerToken, settings=settings),
        Middleware(BodyLimits, settings=settings),
        Middleware(UploadAdmission, admission=admission),
    ]
    origins = [o.strip() for o in settings["serve_cors_origins"].split(",") if o.strip()]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        cors = Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
        stack.insert(0, cors)
    return stack


def _url_policy(settings: Settings) -> UrlPolicy | None:
    """The URL fetching policy, or None when ``serve_url_fetch`` is off."""
    if not settings["serve_url_fetch"]:
        return None
    from rmcli.serve.url_fetch import UrlPolicy

    try:
        return UrlPolicy.from_text(
            settings["serve_url_allow"],
            settings["serve_url_max_bytes"],
            settings["serve_url_timeout"],
        )
    except ValueError as exc:
        from rmcli.errors import ConfigError

        raise ConfigError(f"serve_url_allow {settings['serve_url_allow']!r}: {exc}") from None


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The service started, warmed up in the background, idle sessions evicted; closed at
    the end."""
    service: InferenceService = app.state.service
    await service.start()
    tasks = [
        asyncio.create_task(_start(service, app.state.settings, app.state.serve)),
        asyncio.create_task(_evict_idle(service, app.state.settings)),
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await service.close()


async def _start(service: InferenceService, settings: Settings, state: ServeState) -> None:
    """Weights verified (or the default session warmed up), then ready; then the matting
    kernels compiled and the preloaded models built."""
    model = service.default_model
    try:
        if settings["serve_warmup"]:
            seconds = await service.warm_up()
            log.info("warm-up: %s session built and run in %.2f s", model.name, seconds)
        else:
            await service.verify_weights()
        state.ready, state.reason = True, "ready"
    except RmcliError as exc:
        state.reason = f"default model {model.name} unavailable: {exc}"
        log.error("%s", state.reason)
    service.matting.start()  # after the warm-up, which it would slow down
    await service.preload()


async def _evict_idle(service: InferenceService, settings: Settings) -> None:
    period = max(1.0, min(60.0, settings["serve_session_ttl"] / 4))
    while True:
        await asyncio.sleep(period)
        service.evict_idle()


def _handle_errors(app: FastAPI, metrics: Metrics) -> None:
    """Every failure a route raises becomes ``{"error": one line}`` with its status here."""

    @app.exception_handler(RmcliError)
    async def expected(request: Request, exc: RmcliError) -> JSONResponse:
        status, reason = status_of(exc)
        retry = exc.retry_after if isinstance(exc, ServeError) else None
        if isinstance(exc, ServeError) and exc.tag:
            metrics.rejected.labels(exc.tag).inc()
        return error_response(status, " ".join(reason.split()), retry)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, " ".join(str(exc.detail).split()))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", printable(request.url.path), exc_info=exc)
        return error_response(500, f"internal error: {type(exc).__name__} (see the server log)")


def _service_for(settings: Settings) -> InferenceService:
    """The inference service of the ``executor`` setting's executor (from the registry)."""
    import importlib

    from rmcli.engine.registry import get_executor
    from rmcli.errors import UsageError

    executor = get_executor(settings["executor"], settings.source("executor"))
    if executor.serve_with:
        module, _, name = executor.serve_with.partition(":")
        service: type[InferenceService] = getattr(importlib.import_module(module), name)
        return service(settings)
    if not executor.in_process:
        raise UsageError(
            f"executor {executor.name!r} ({settings.source('executor')}) runs batches but "
            "cannot serve: it names no inference service (serve_with)"
        )
    return InferenceService(settings)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rmcli")
    except PackageNotFoundError:
        return "0"
