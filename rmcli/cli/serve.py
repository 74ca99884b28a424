"""``rmcli serve``: the HTTP service (rembg-compatible API, rmcli's API, metrics, a web page)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from rmcli.errors import UsageError
from rmcli.settings import flag_help


def serve(
    host: Annotated[str | None, typer.Option(help=flag_help("serve_host"))] = None,
    port: Annotated[int | None, typer.Option(help=flag_help("serve_port"))] = None,
    model: Annotated[str | None, typer.Option(help=flag_help("model"))] = None,
    backend: Annotated[str | None, typer.Option(help=flag_help("backend"))] = None,
    slots: Annotated[int | None, typer.Option(help=flag_help("serve_slots"))] = None,
    queue: Annotated[int | None, typer.Option(help=flag_help("serve_queue"))] = None,
    deadline: Annotated[float | None, typer.Option(help=flag_help("serve_deadline"))] = None,
    max_body: Annotated[int | None, typer.Option(help=flag_help("serve_max_body"))] = None,
    models: Annotated[str | None, typer.Option(help=flag_help("serve_models"))] = None,
    warmup: Annotated[
        bool | None,
        typer.Option("--warmup/--no-warmup", help=flag_help("serve_warmup"), show_default=False),
    ] = None,
    url_fetch: Annotated[
        bool | None,
        typer.Option(
            "--url-fetch/--no-url-fetch", help=flag_help("serve_url_fetch"), show_default=False
        ),
    ] = None,
    cors_origins: Annotated[str | None, typer.Option(help=flag_help("serve_cors_origins"))] = None,
    grace: Annotated[float | None, typer.Option(help=flag_help("serve_grace"))] = None,
    executor: Annotated[
        str | None, typer.Option(help="Only local: inferences run in this process.")
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="Logging level: debug, info, warning, error.")
    ] = "info",
) -> None:
    """Serve background removal over HTTP until SIGTERM or Ctrl-C (then drain and exit 0).

    The bearer token comes from RMCLI_SERVE_TOKEN or the config file (never a flag, so it is
    not shown in the process list). See docs/serving.md.
    """
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"rmcli serve needs the serve extra ({exc.name} is missing): pip install 'rmcli[serve]'"
        ) from None
    if executor not in (None, "local"):
        raise UsageError(
            f"rmcli serve runs inferences in its own process; --executor {executor} is not "
            "supported yet (run several replicas instead: see docs/serving.md)"
        )
    from rmcli.settings import resolve

    _setup_logging(log_level)
    flags = {
        "serve_host": (host, "flag --host"),
        "serve_port": (port, "flag --port"),
        "model": model,
        "backend": backend,
        "serve_slots": (slots, "flag --slots"),
        "serve_queue": (queue, "flag --queue"),
        "serve_deadline": (deadline, "flag --deadline"),
        "serve_max_body": (max_body, "flag --max-body"),
        "serve_models": (models, "flag --models"),
        "serve_warmup": (warmup, f"flag --{'' if warmup else 'no-'}warmup"),
        "serve_url_fetch": (url_fetch, f"flag --{'' if url_fetch else 'no-'}url-fetch"),
        "serve_cors_origins": (cors_origins, "flag --cors-origins"),
        "serve_grace": (grace, "flag --grace"),
    }
    settings = resolve(flags)
    from rmcli.serve.server import serve as run

    run(settings)


def _setup_logging(level: str) -> None:
    """One line per record on stderr: ``time level logger: message`` (access log included)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(f"--log-level {level!r} is not one of debug, info, warning, error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)


def register(app: typer.Typer) -> None:
    app.command()(serve)
