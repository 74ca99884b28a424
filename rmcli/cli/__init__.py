"""The ``rmcli`` command line. Sub-command modules import heavy libraries only when they run."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from rmcli.errors import EXIT_INTERRUPTED, RmcliError

app = typer.Typer(
    name="rmcli",
    help="Remove image backgrounds with ONNX models, on explicit CPU/GPU backends.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_commands() -> None:
    from rmcli.cli import bench, config, models, plugins, remove

    remove.register(app)
    models.register(app)
    plugins.register(app)
    bench.register(app)
    config.register(app)


def main() -> None:
    """Console entry point: expected failures become one line on stderr and an exit code."""
    import logging

    from rmcli.log import install_cli_handler, remove_cli_handler

    install_cli_handler(logging.DEBUG if os.environ.get("RMCLI_DEBUG") else logging.INFO)
    _register_commands()
    try:
        app(prog_name="rmcli")
    except RmcliError as exc:
        if os.environ.get("RMCLI_DEBUG"):
            traceback.print_exc()
        print(f"rmcli: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("rmcli: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    finally:
        remove_cli_handler()
