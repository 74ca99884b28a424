"""The ``rmcli`` command line. Sub-command modules import heavy libraries only when they run.

:func:`main` is the one place where errors become a message and an exit code: an
:class:`RmcliError` or a usage error becomes one ``rmcli: error: ...`` line (coloured on a
terminal unless ``NO_COLOR`` is set) and exit code 2 (or the error's own code).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated

import typer

from rmcli.errors import EXIT_INTERRUPTED, RmcliError

app = typer.Typer(
    name="rmcli",
    help="Remove image backgrounds with ONNX models, on explicit CPU/GPU backends.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)  # its --help, and every command's, is rmcli.cli.help's (set when the commands register)


def _version(value: bool) -> None:
    if not value:
        return
    import platform

    from rmcli.version import __version__

    typer.echo(f"rmcli {__version__}")
    try:
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers())
        typer.echo(f"onnxruntime {ort.__version__} (providers: {providers})")
    except ImportError:
        typer.echo("onnxruntime: not installed")
    typer.echo(f"Python {platform.python_version()} ({sys.executable})")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the versions of rmcli, onnxruntime (with its providers) and Python.",
        ),
    ] = None,
) -> None:
    """Remove image backgrounds with ONNX models, on explicit CPU/GPU backends."""


def _register_commands() -> None:
    from rmcli.cli import bench, config, models, plugins, rembg, remove, serve, stream

    remove.register(app)
    rembg.register(app)
    stream.register(app)
    models.register(app)
    plugins.register(app)
    bench.register(app)
    config.register(app)
    serve.register(app)
    _use_rmcli_help(app)


def _use_rmcli_help(typer_app: typer.Typer) -> None:
    """Every command's and group's --help is rmcli's (panels, examples, --help-all)."""
    from rmcli.cli.help import HelpCommand, HelpGroup

    typer_app.info.cls = HelpGroup
    for command in typer_app.registered_commands:
        command.cls = HelpCommand
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _use_rmcli_help(group.typer_instance)


def error_line(message: str) -> str:
    """``rmcli: error: message``, the label coloured on a terminal without ``NO_COLOR``; a
    message holding control characters (a file name's) is one quoted line."""
    from rmcli.log import one_line

    label = "error:"
    if sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        label = f"\x1b[31;1m{label}\x1b[0m"
    return f"rmcli: {label} {one_line(message)}"


def main() -> None:
    """Console entry point: expected failures become one line on stderr and an exit code."""
    import logging

    from typer import Abort
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    from rmcli.cli.progress import show_downloads
    from rmcli.log import install_cli_handler, remove_cli_handler

    install_cli_handler(logging.DEBUG if os.environ.get("RMCLI_DEBUG") else logging.INFO)
    _register_commands()
    show_downloads()
    code = 0
    try:
        code = app(prog_name="rmcli", standalone_mode=False) or 0
    except NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except ClickException as exc:  # usage errors: the same one-line form as rmcli's own
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "rmcli"
        print(error_line(f"{_usage_message(exc)} (see '{command} --help')"), file=sys.stderr)
        code = exc.exit_code
    except RmcliError as exc:
        if os.environ.get("RMCLI_DEBUG"):
            traceback.print_exc()
        print(error_line(str(exc)), file=sys.stderr)
        code = exc.exit_code
    except (KeyboardInterrupt, Abort):
        print("rmcli: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        remove_cli_handler()
    sys.exit(code)


def _usage_message(exc: Exception) -> str:
    """Click's message, with a missing input said plainly."""
    from typer._click.exceptions import MissingParameter

    if isinstance(exc, MissingParameter) and exc.param is not None:
        name = (exc.param.metavar or exc.param.name or "").upper()
        if exc.param.param_type_name == "argument":
            return f"missing {name}"
    message = exc.format_message()
    return message[:1].lower() + message[1:] if message else "usage error"


__all__ = ["app", "error_line", "main"]
