"""The ASGI application of ``rmcli serve``: :func:`create_app` (FastAPI on Starlette).

A thin pure-ASGI gate in front of the routes does what must happen before the routes run:
access log and metrics, Host check, bearer token, body limit (413), body time limit and
minimum rate (408), and admission (503 + Retry-After once the slots and the queue are full),
which an upload gets only once its whole body has arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterator
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
from rmcli.serve.http_errors import ServeError, status_of
from rmcli.serve.metrics import Metrics
from rmcli.serve.service import ImageRequest, InferenceService

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
        408: "The body did not arrive in time (serve_body_timeout, serve_min_rate)",
        413: "Body or fetched image too large",
        422: "Invalid field, image over the pixel limit, or output too large for its format",
        502: "The URL could not be fetched",
        503: "Busy (queue full), deadline passed, draining, or model unavailable; see Retry-After",
        504: "The URL was not fetched within serve_url_timeout",
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
    **_error_responses(400, 401, 403, 408, 413, 422, 502, 503, 504),
}
BODY_GRACE = 2.0  # seconds before serve_min_rate applies to a body
PATH = re.compile(r"(?<![\w/:.~-])/[^\s'\",;()]+")


@dataclass
class ServeState:
    """What /readyz reports and the signal handler changes."""

    ready: bool = False
    reason: str = "starting"
    draining: bool = False
    admitted: int = 0


def _json_error(
    status: int, reason: str, retry_after: int | None = None, close: bool = False
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": without_paths(reason)}, status_code=status, headers=headers)


def without_paths(reason: str) -> str:
    """``reason`` with every absolute file path cut to its last part (``…/name``): answers
    never show where the server keeps its files."""
    return PATH.sub(lambda m: "…/" + m[0].rstrip("/.").rpartition("/")[2], reason)


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one log line: control and non-ASCII characters and quotes escaped."""
    return text[:limit].encode("unicode_escape").decode("ascii").replace('"', '\\"')


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
        self.state.admitted += 1
        self.metrics.admitted.inc()
        try:
            yield
        finally:
            self.state.admitted -= 1
            self.metrics.admitted.dec()


class SlowBody(Exception):
    """The body did not arrive within serve_body_timeout or at serve_min_rate."""


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


class Gate:
    """Pure ASGI middleware: access log + metrics, Host, token, body limits, admission."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        state: ServeState,
        metrics: Metrics,
        admission: Admission,
    ) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self.token = settings["serve_token"].encode()
        self.max_body = settings["serve_max_body"]
        self.body_timeout = settings["serve_body_timeout"]
        self.min_rate = settings["serve_min_rate"]
        self.admission = admission
        self.retry_after = settings["serve_retry_after"]
        self.access = settings["serve_access_log"]
        self.hosts = allowed_hosts(settings)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["arrived"] = asyncio.get_running_loop().time()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        answer = {"status": 500, "sent": 0, "started": False}

        async def send_logged(message: dict) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["started"] = True
            elif message["type"] == "http.response.body":
                answer["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self._handle(scope, receive, send_logged, path)
        except asyncio.CancelledError:
            if not self.state.draining or answer["started"]:
                raise
            # the grace period ended with this request unanswered: a load balancer retries 503
            reason = f"draining: the server is shutting down; retry after {self.retry_after} s"
            response = _json_error(503, reason, self.retry_after, close=True)
            await response(scope, receive, send_logged)
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
                    printable(scope["method"]),
                    printable(target, 2000),
                    status,
                    answer["sent"],
                    seconds,
                    f" model={printable(model)}" if model else "",
                )

    async def _handle(self, scope: dict, receive: Any, send: Any, path: str) -> None:
        if self.hosts is not None:
            given = next((v for k, v in scope["headers"] if k == b"host"), None)
            if given is not None and _host_name(given) not in self.hosts:
                await self._drain(receive)
                reason = (
                    f"Host {given.decode('latin-1')[:100]!r} is not served here "
                    "(serve_allowed_hosts)"
                )
                await _json_error(400, reason)(scope, receive, send)
                return
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
        if path in INFERENCE_PATHS and scope["method"] == "POST":
            await self._upload(scope, receive, send)
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

        await self.app(scope, counted, guarded_send)

    async def _upload(self, scope: dict, receive: Any, send: Any) -> None:
        """An upload: its whole body first (no admission place meanwhile), then admission; the
        deadline counts from the body's arrival."""
        try:
            body = await self._body(receive)
        except SlowBody as exc:
            await _json_error(408, str(exc), close=True)(scope, receive, send)
            return
        if body is None:  # the client went away
            scope["state"]["client_gone"] = True
            return
        if len(body) > self.max_body:
            await self._too_large(scope, receive, send, drain=False)
            return
        scope["state"]["arrived"] = asyncio.get_running_loop().time()
        reason = self.admission.refusal()
        if reason is not None:
            await _json_error(503, reason, self.retry_after)(scope, receive, send)
            return
        given = False

        async def replay() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # what comes after the body: a disconnect

        with self.admission.held():
            await self.app(scope, replay, send)

    async def _body(self, receive: Any) -> bytes | None:
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
        await _json_error(413, reason, close=not drain)(scope, receive, send)

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
    admission = Admission(state, metrics, engine.capacity, settings["serve_retry_after"])
    url_policy = None
    if settings["serve_url_fetch"]:
        from rmcli.serve.fetch import UrlPolicy

        try:
            url_policy = UrlPolicy.from_text(
                settings["serve_url_allow"],
                settings["serve_url_max_bytes"],
                settings["serve_url_timeout"],
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
        engine.matting.start()  # after the warm-up, which it would slow down
        await engine.preload()

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
        docs_url=None,  # Swagger UI would come from a CDN: /docs is a local page instead
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
        log.error("internal error on %s", printable(request.url.path), exc_info=exc)
        return _json_error(500, f"internal error: {type(exc).__name__} (see the server log)")

    async def _answer(request: Request, job: ImageRequest) -> Response:
        request.state.model = engine.label(job.model)
        deadline = request.state.arrived + settings["serve_deadline"]
        work = asyncio.ensure_future(engine.run(job, deadline))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server stops: the work goes with this request
            work.cancel()
            gone.cancel()
            raise
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

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(api_page(app.openapi()))

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
                "memory_budget": {
                    "bytes": engine.memory.total,
                    "source": engine.memory.source,
                    "held": engine.memory.held(),
                    "loaded": engine.memory.loaded(),
                },
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
        summary="Models requests may name, the default, those ready (weights on disk) and loaded",
        responses=_error_responses(401),
    )
    async def models() -> dict[str, Any]:
        from rmcli.engine.registry import models as catalogue

        known = catalogue()
        names = sorted(engine.allowed_models or known)
        weights = {n: known[n].weights for n in names if n in known}
        weights[engine.default_model.name] = engine.default_model.weights
        ready = [n for n in names if n in weights and _on_disk(settings, weights[n])]
        return {
            "default": engine.default_model.name,
            "models": names,
            "ready": ready,
            "loaded": engine.memory.loaded(),  # bytes counted against serve_memory_budget
            "memory_budget": engine.memory.total,
        }

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
        _check_matting(options, engine)
        return await _answer(request, ImageRequest(data, model, options, label=_label(file)))

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
        _check_matting(options, engine)
        engine.remover(model)  # an unknown model is refused before any fetch
        deadline = request.state.arrived + settings["serve_deadline"]
        data = await fetch(url, url_policy, deadline=deadline)  # no admission place meanwhile
        reason = admission.refusal()
        if reason is not None:
            raise ServeError(503, reason, settings["serve_retry_after"])
        with admission.held():
            return await _answer(request, ImageRequest(data, model, options, label=url[:200]))

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
        _check_matting(options, engine)
        job = ImageRequest(
            data, model, options, fmt=format, background=back or None, label=_label(file)
        )
        return await _answer(request, job)

    app.add_middleware(Gate, settings=settings, state=state, metrics=metrics, admission=admission)
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


def _engine_for(settings: Settings) -> InferenceService:
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
    return options


def _check_matting(options: ComposeOptions, engine: InferenceService) -> None:
    """Matting needs pymatting, and its kernels compiled (503 + Retry-After until then)."""
    if options.alpha_matting and not options.only_mask:
        from rmcli.images.matting import require_pymatting

        require_pymatting()
        engine.require_matting()


def api_page(schema: dict[str, Any]) -> str:
    """/docs: the endpoints of ``schema`` as a plain page (nothing loaded from elsewhere)."""
    from html import escape

    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            fields = [p["name"] for p in operation.get("parameters", [])]
            body = operation.get("requestBody", {}).get("content", {})
            for content in body.values():
                ref = content.get("schema", {}).get("$ref", "")
                component = schema.get("components", {}).get("schemas", {})
                fields += list(component.get(ref.rpartition("/")[2], {}).get("properties", {}))
            rows.append(
                f"<tr><td><code>{escape(method.upper())} {escape(path)}</code></td>"
                f"<td>{escape(operation.get('summary', ''))}</td>"
                f"<td>{escape(', '.join(fields))}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>rmcli serve API</title>"
        "</head><body><h1>rmcli serve API</h1><p>The full OpenAPI schema is "
        "<a href='/openapi.json'>/openapi.json</a>; open it in any OpenAPI viewer.</p>"
        "<table border='1' cellpadding='4'><tr><th>endpoint</th><th>what</th><th>fields</th>"
        f"</tr>{''.join(rows)}</table></body></html>"
    )


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
