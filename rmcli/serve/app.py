"""The ASGI application of ``rmcli serve``: :func:`create_app` (FastAPI on Starlette).

A thin pure-ASGI gate in front of the routes does what must happen before a body is read:
access log and metrics, bearer token, body limit (413) and admission (503 + Retry-After once
the slots and the queue are full).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from rmcli.config.settings import Settings
from rmcli.contracts.output import ComposeOptions
from rmcli.errors import RmcliError
from rmcli.serve.engine import Engine, Job, ServeError, status_of
from rmcli.serve.metrics import Metrics

log = logging.getLogger("rmcli.serve")
access_log = logging.getLogger("rmcli.serve.access")

INFERENCE_PATHS = {"/api/remove", "/v1/remove"}
OPEN_PATHS = {"/", "/healthz", "/readyz", "/docs", "/openapi.json", "/favicon.ico"}
ENDPOINTS = INFERENCE_PATHS | OPEN_PATHS | {"/metrics", "/v1/models"}


class ErrorBody(BaseModel):
    """Every error: one line saying what went wrong."""

    error: str


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Bad input (not an image, bad option, unknown model)",
        401: "Missing or wrong bearer token",
        403: "Refused (URL fetching off, or a non-public address)",
        413: "Body or fetched image too large",
        422: "Invalid field, or image over the pixel limit",
        502: "The URL could not be fetched",
        503: "Busy (queue full), deadline passed, or model unavailable; see Retry-After",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The cut-out (or mask, or composite)",
    },
    **_error_responses(400, 401, 403, 413, 422, 502, 503),
}


@dataclass
class ServeState:
    """What /readyz reports and the signal handler changes."""

    ready: bool = False
    reason: str = "starting"
    draining: bool = False
    admitted: int = 0


def _json_error(status: int, reason: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


class Gate:
    """Pure ASGI middleware: access log + metrics, token, body limit, admission."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        state: ServeState,
        metrics: Metrics,
        capacity: Callable[[], int],
    ) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.token = settings["serve_token"].encode()
        self.max_body = settings["serve_max_body"]
        self.capacity = capacity  # slots + queue (a Dask cluster's slots change)
        self.retry_after = settings["serve_retry_after"]
        self.access = settings["serve_access_log"]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["arrived"] = asyncio.get_running_loop().time()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        answer = {"status": 500, "sent": 0}

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._handle(scope, receive, send_logged, path)
        finally:
            status = answer["status"]
            if state.get("client_gone"):
                status = 499
            model = state.get("model", "") if path in INFERENCE_PATHS else ""
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(endpoint, model, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if self.access:
                client = scope.get("client") or ("-", 0)
                query = scope.get("query_string", b"").decode("latin-1")
                target = path + ("?" + query if query and path != "/api/remove" else "")
                access_log.info(
                    '%s "%s %s" %d %d %.3fs%s',
                    client[0],
                    scope["method"],
                    target,
                    status,
                    answer["sent"],
                    seconds,
                    f" model={model}" if model else "",
                )

    async def _handle(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        if self.token and path not in OPEN_PATHS and not self._authorised(scope):
            await self._drain(receive)
            response = _json_error(401, "missing or wrong bearer token (Authorization: Bearer …)")
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            return
        inference = path in INFERENCE_PATHS and scope["method"] in ("GET", "POST")
        capacity = self.capacity()
        if inference and self.state.admitted >= capacity:
            self.metrics.rejected.labels("queue_full").inc()
            await self._drain(receive)
            reason = (
                f"busy: {capacity} requests already queued or running "
                f"(inference slots + serve_queue); retry after {self.retry_after} s"
            )
            await _json_error(503, reason, self.retry_after)(scope, receive, send)
            return
        received = 0
        over = False

        async def counted() -> dict:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    over = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if over:  # the app saw a cut body: answer 413 instead of what it says
                    await self._too_large(scope, receive, send, drain=False)
                    return
            elif over:
                return
            await send(message)

        if inference:
            self.state.admitted += 1
            self.metrics.admitted.inc()
        try:
            await self.app(scope, counted, guarded_send)
        finally:
            if inference:
                self.state.admitted -= 1
                self.metrics.admitted.dec()

    def _authorised(self, scope: dict) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self.token
                )
        return False

    async def _too_large(self, scope: dict, receive: Any, send: Any, drain: bool = True) -> None:
        if drain:
            await self._drain(receive)
        reason = f"request body over {self.max_body:,} bytes (serve_max_body)"
        await _json_error(413, reason)(scope, receive, send)

    async def _drain(self, receive: Any) -> None:
        """Read (and drop) the body, up to the limit, so the connection stays usable."""
        seen = 0
        while seen <= self.max_body:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body"):
                return


def create_app(settings: Settings) -> FastAPI:
    """The rmcli serve application for resolved ``settings`` (see ``docs/serving.md``)."""
    from rmcli.images.decoding import quiet_pillow_warnings

    quiet_pillow_warnings()
    engine = _engine_for(settings)
    metrics = Metrics(engine)
    state = ServeState()
    url_policy = None
    if settings["serve_url_fetch"]:
        from rmcli.serve.fetch import UrlPolicy

        try:
            url_policy = UrlPolicy.from_text(
                settings["serve_url_allow"], settings["serve_url_max_bytes"]
            )
        except ValueError as exc:
            from rmcli.errors import ConfigError

            raise ConfigError(f"serve_url_allow {settings['serve_url_allow']!r}: {exc}") from None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.start()
        tasks = [asyncio.create_task(_start()), asyncio.create_task(_evict_idle())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await engine.close()

    async def _start() -> None:
        model = engine.default_model
        try:
            if settings["serve_warmup"]:
                seconds = await engine.warm_up()
                log.info("warm-up: %s session built and run in %.2f s", model.name, seconds)
            else:
                await engine.verify_weights()
            state.ready, state.reason = True, "ready"
        except RmcliError as exc:
            state.reason = f"default model {model.name} unavailable: {exc}"
            log.error("%s", state.reason)

    async def _evict_idle() -> None:
        period = max(1.0, min(60.0, settings["serve_session_ttl"] / 4))
        while True:
            await asyncio.sleep(period)
            engine.evict_idle()

    app = FastAPI(
        title="rmcli serve",
        summary="Remove image backgrounds with ONNX models under a fixed core budget.",
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.serve = state
    app.state.engine = engine
    app.state.metrics = metrics

    @app.exception_handler(RmcliError)
    async def expected(request: Request, exc: RmcliError) -> JSONResponse:
        status, reason = status_of(exc)
        retry = exc.retry_after if isinstance(exc, ServeError) else None
        if isinstance(exc, ServeError) and exc.tag:
            metrics.rejected.labels(exc.tag).inc()
        return _json_error(status, " ".join(reason.split()), retry)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
        return _json_error(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _json_error(exc.status_code, " ".join(str(exc.detail).split()))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s", request.url.path, exc_info=exc)
        return _json_error(500, f"internal error: {type(exc).__name__} (see the server log)")

    async def _answer(request: Request, job: Job) -> Response:
        request.state.model = job.model or engine.default_model.name
        deadline = request.state.arrived + settings["serve_deadline"]
        work = asyncio.ensure_future(engine.run(job, deadline))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            request.state.client_gone = True
            return Response(status_code=499)
        gone.cancel()
        output = work.result()
        request.state.model = output.model
        return Response(output.body, media_type=output.media_type)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("rmcli.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    @app.get("/healthz", tags=["operations"], summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: weights verified, default session warm, not draining",
        responses=_error_responses(503),
    )
    async def readyz() -> JSONResponse:
        if state.draining:
            return _json_error(503, "draining: shutting down")
        if not state.ready:
            return _json_error(503, state.reason)
        reason = engine.unavailable()
        if reason:
            return _json_error(503, reason)
        return JSONResponse(
            {
                "status": "ready",
                "model": engine.default_model.name,
                "executor": engine.executor,
                "slots": engine.scheduler.slots,
            }
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **_error_responses(401),
        },
    )
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/models",
        tags=["rmcli"],
        summary="Models requests may name, the default, and those ready (weights on disk)",
        responses=_error_responses(401),
    )
    async def models() -> dict[str, Any]:
        from rmcli.engine.registry import models as catalogue

        known = catalogue()
        names = sorted(engine.allowed_models or known)
        weights = {n: known[n].weights for n in names if n in known}
        weights[engine.default_model.name] = engine.default_model.weights
        ready = [n for n in names if n in weights and _on_disk(settings, weights[n])]
        return {"default": engine.default_model.name, "models": names, "ready": ready}

    @app.post(
        "/api/remove",
        tags=["rembg-compatible"],
        summary="Remove the background of an uploaded image (rembg 2.0.86's form)",
        response_class=Response,
        responses=IMAGE_RESPONSES,
    )
    async def rembg_post(
        request: Request,
        file: Annotated[UploadFile, File(description="The image")],
        model: Annotated[str | None, Form(description="Model (default: the server's)")] = None,
        a: Annotated[bool, Form(description="Alpha matting")] = False,
        af: Annotated[int, Form(ge=0, le=255, description="Matting: foreground above")] = 240,
        ab: Annotated[int, Form(ge=0, le=255, description="Matting: background below")] = 10,
        ae: Annotated[int, Form(ge=0, le=255, description="Matting: erosion size")] = 10,
        om: Annotated[bool, Form(description="Only the mask")] = False,
        ppm: Annotated[bool, Form(description="Post-process the mask")] = False,
        bgc: Annotated[str | None, Form(description="Background colour r,g,b,a")] = None,
        bgc_query: Annotated[
            str | None, Query(alias="bgc", description="Background colour (rembg reads it here)")
        ] = None,
    ) -> Response:
        data = await file.read()
        options = _rembg_options(settings, a, af, ab, ae, om, ppm, bgc or bgc_query)
        return await _answer(request, Job(data, model, options, label=_label(file)))

    @app.get(
        "/api/remove",
        tags=["rembg-compatible"],
        summary="Remove the background of an image at a URL (off unless serve_url_fetch)",
        response_class=Response,
        responses=IMAGE_RESPONSES,
    )
    async def rembg_get(
        request: Request,
        url: Annotated[str, Query(description="http(s) URL of the image")],
        model: Annotated[str | None, Query(description="Model (default: the server's)")] = None,
        a: Annotated[bool, Query(description="Alpha matting")] = False,
        af: Annotated[int, Query(ge=0, le=255)] = 240,
        ab: Annotated[int, Query(ge=0, le=255)] = 10,
        ae: Annotated[int, Query(ge=0, le=255)] = 10,
        om: Annotated[bool, Query(description="Only the mask")] = False,
        ppm: Annotated[bool, Query(description="Post-process the mask")] = False,
        bgc: Annotated[str | None, Query(description="Background colour r,g,b,a")] = None,
    ) -> Response:
        if url_policy is None:
            raise ServeError(
                403,
                "fetching images from URLs is off; start the server with --url-fetch "
                "(or RMCLI_SERVE_URL_FETCH=true) to allow public http(s) URLs",
            )
        from rmcli.serve.fetch import fetch

        options = _rembg_options(settings, a, af, ab, ae, om, ppm, bgc)
        engine.model(model)  # an unknown model is refused before any fetch
        data = await fetch(url, url_policy)
        return await _answer(request, Job(data, model, options, label=url[:200]))

    @app.post(
        "/v1/remove",
        tags=["rmcli"],
        summary="Remove the background of an uploaded image, with every rmcli output option",
        response_class=Response,
        responses=IMAGE_RESPONSES,
    )
    async def v1_remove(
        request: Request,
        file: Annotated[UploadFile, File(description="The image")],
        model: Annotated[str | None, Form(description="Model (default: the server's)")] = None,
        format: Annotated[
            str, Form(pattern="^(png|webp|jpg)$", description="Output format: png, webp, jpg")
        ] = "png",
        only_mask: Annotated[bool, Form(description="The 8-bit mask instead")] = False,
        bgcolor: Annotated[
            str | None, Form(description="Background: a name, #rrggbb[aa] or r,g,b[,a]")
        ] = None,
        background: Annotated[
            UploadFile | None, File(description="Background image, scaled to cover")
        ] = None,
        premultiplied: Annotated[
            bool | None, Form(description="Colour scaled by alpha, as rembg")
        ] = None,
        crop: Annotated[bool, Form(description="Crop to the subject")] = False,
        margin: Annotated[int | None, Form(ge=0, le=10000, description="Crop margin")] = None,
        crop_threshold: Annotated[int | None, Form(ge=0, le=254)] = None,
        alpha_matting: Annotated[bool, Form(description="Refine edges (pymatting)")] = False,
        alpha_matting_foreground_threshold: Annotated[int | None, Form(ge=0, le=255)] = None,
        alpha_matting_background_threshold: Annotated[int | None, Form(ge=0, le=255)] = None,
        alpha_matting_erode_size: Annotated[int | None, Form(ge=0, le=255)] = None,
        post_process_mask: Annotated[bool | None, Form(description="Smooth the mask")] = None,
    ) -> Response:
        data = await file.read()
        back = await background.read() if background is not None else None
        options = ComposeOptions.from_settings(
            settings,
            only_mask=only_mask,
            bgcolor=bgcolor,
            premultiplied=premultiplied,
            crop=crop,
            crop_margin=margin,
            crop_threshold=crop_threshold,
            alpha_matting=alpha_matting,
            alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
            alpha_matting_background_threshold=alpha_matting_background_threshold,
            alpha_matting_erode_size=alpha_matting_erode_size,
            post_process_mask=post_process_mask,
        )
        _check_matting(options)
        job = Job(data, model, options, fmt=format, background=back or None, label=_label(file))
        return await _answer(request, job)

    app.add_middleware(
        Gate, settings=settings, state=state, metrics=metrics, capacity=engine.capacity
    )
    origins = [o.strip() for o in settings["serve_cors_origins"].split(",") if o.strip()]
    if origins:  # outermost, so refusals carry the CORS headers too
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _engine_for(settings: Settings) -> Engine:
    """The engine for the ``executor`` setting: local slots, or Dask workers."""
    executor = settings["executor"]
    if executor == "dask":
        from rmcli.serve.cluster import DaskEngine

        return DaskEngine(settings)
    if executor != "local":
        from rmcli.errors import UsageError

        raise UsageError(
            f"rmcli serve runs inferences locally or on Dask; executor {executor!r} "
            f"({settings.source('executor')}) is for batches: use --executor local or dask"
        )
    return Engine(settings)


def _on_disk(settings: Settings, weights: Any) -> bool:
    """Whether ``weights`` are on this machine (cached, in place or in rembg's cache): the
    models the server can serve without fetching anything."""
    from rmcli.engine.session import store_for
    from rmcli.engine.weights import rembg_copies

    store = store_for(settings)
    if store.path_for(weights).is_file():
        return True
    return store.in_cache(weights) and any(c.is_file() for c in rembg_copies(weights.filename))


def _label(file: UploadFile) -> str:
    name = (file.filename or "upload").replace("\n", " ").replace("\r", " ")
    return name[:200]


def _rembg_options(
    settings: Settings,
    a: bool,
    af: int,
    ab: int,
    ae: int,
    om: bool,
    ppm: bool,
    bgc: str | None,
) -> ComposeOptions:
    """rembg's options: its defaults (not the server's), premultiplied colour and RGBA as rembg
    gives."""
    options = ComposeOptions(
        only_mask=om,
        bgcolor=bgc or None,
        premultiplied=True,
        keep_alpha=True,
        alpha_matting=a,
        alpha_matting_foreground_threshold=af,
        alpha_matting_background_threshold=ab,
        alpha_matting_erode_size=ae,
        matting_max_pixels=settings["matting_max_pixels"],
        post_process_mask=ppm,
    ).checked()
    _check_matting(options)
    return options


def _check_matting(options: ComposeOptions) -> None:
    if options.alpha_matting and not options.only_mask:
        from rmcli.images.matting import require_pymatting

        require_pymatting()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rmcli")
    except PackageNotFoundError:
        return "0"
