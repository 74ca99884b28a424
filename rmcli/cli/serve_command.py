"""``rmcli serve``: the HTTP service (rembg-compatible API, rmcli's API, metrics, a web page).

Its options are generated from the settings table, like ``rmcli remove``'s: the ``serve_*``
rows first, then the rows whose ``also`` names serve (model, backend and session settings,
weights, pixel limits, executor), so names, defaults and environment variables are written
down once.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Annotated, Any

import typer

from rmcli.cli.remove import flags_given, setting_parameters
from rmcli.errors import UsageError
from rmcli.extras import pip_install


def serve(
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="Logging level: debug, info, warning, error.")
    ] = "info",
    **given: Any,
) -> None:
    """Serve background removal over HTTP until SIGTERM or Ctrl-C (then drain and exit 0).

    The bearer token comes from RMCLI_SERVE_TOKEN or the config file (never a flag, so it is
    not shown in the process list). See docs/serving.md.
    """
    serve_with(flags_given(given), log_level)


def serve_with(flags: dict[str, Any], log_level: str) -> None:
    """Serve with these setting ``flags`` (``rmcli serve`` and rembg's ``rmcli s``)."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"rmcli serve needs the serve extra ({exc.name} is missing): {pip_install('serve')}"
        ) from None
    from rmcli.config.settings import resolve

    settings = resolve(flags)
    _setup_logging(log_level)
    from rmcli.serve.server import serve as run

    run(settings)


def _setup_logging(level: str) -> None:
    """One line per record on stderr, ``time level logger: message``, for every logger
    (rmcli's, the access log's and uvicorn's)."""
    from rmcli.log import remove_cli_handler

    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(f"--log-level {level!r} is not one of debug, info, warning, error")
    remove_cli_handler()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Dask's client, and a local cluster's scheduler, narrate every connection at INFO
    if numeric > logging.DEBUG:
        logging.getLogger("distributed").setLevel(max(numeric, logging.WARNING))


def register(app: typer.Typer) -> None:
    if "__signature__" not in vars(serve):  # once per process, however often main() runs
        signature = inspect.signature(serve, eval_str=True)
        fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        serve.__signature__ = signature.replace(parameters=[*fixed, *setting_parameters("serve")])
    app.command(short_help="HTTP service: rembg's API, rmcli's API, metrics, a web page.")(serve)
