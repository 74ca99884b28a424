"""``rmcli serve``: background removal over HTTP under a fixed core budget.

:func:`create_app` builds the FastAPI application from resolved settings (``app``: the
inference service of ``service``, metrics, state, admission); ``routes`` holds its APIRouters,
``middleware`` the pure-ASGI checks in front of them; :func:`rmcli.serve.server.serve` runs it
under uvicorn. Needs the ``serve`` extra. See docs/serving.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from rmcli.config.settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, **values: Any) -> FastAPI:
    """The ASGI application for ``settings`` (default: resolved as the CLI does), with
    ``values`` overriding them; serve it with any ASGI server (``rmcli serve`` uses uvicorn)."""
    from rmcli.config.settings import resolve
    from rmcli.serve.app import create_app as build

    settings = resolve() if settings is None else settings
    if values:
        settings = settings.with_values("create_app()", **values)
    return build(settings)
