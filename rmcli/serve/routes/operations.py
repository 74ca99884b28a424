"""Operations: ``/healthz`` (alive), ``/readyz`` (ready to answer), ``/metrics`` (Prometheus),
and two pages: ``/`` (the upload page) and ``/docs`` (the API, loading nothing from elsewhere)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from rmcli.serve.http_errors import error_response
from rmcli.serve.routes.answer import error_responses
from rmcli.serve.routes.dependencies import ServeMetrics, Service, State

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    html = resources.files("rmcli.serve").joinpath("static/index.html").read_text("utf-8")
    return HTMLResponse(html)


@router.get("/docs", response_class=HTMLResponse, include_in_schema=False)
async def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(api_page(request.app.openapi()))


@router.get("/healthz", tags=["operations"], summary="Alive")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/readyz",
    tags=["operations"],
    summary="Ready: weights verified, default session warm, not draining",
    responses=error_responses(503),
)
async def readyz(state: State, service: Service) -> JSONResponse:
    if state.draining:
        return error_response(503, "draining: shutting down")
    if not state.ready:
        return error_response(503, state.reason)
    reason = service.unavailable()
    if reason:
        return error_response(503, reason)
    return JSONResponse(
        {
            "status": "ready",
            "model": service.default_model.name,
            "executor": service.executor,
            "slots": service.scheduler.slots,
            "memory_budget": service.memory_report(),
        }
    )


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **error_responses(401),
    },
)
async def prometheus(metrics: ServeMetrics) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


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
