"""The ``rmcli`` command line. Only the command that runs is built and imported.

:data:`COMMANDS` is the one table of sub-commands: the name, the module whose ``register(app)``
adds it, and the line ``rmcli --help`` shows. The root group (:class:`LazyGroup`, click's
lazy-loading pattern on Typer's group) lists and completes names from the table and imports a
module only when one of its commands runs, shows its help or completes its options.

:func:`main` is the one place where errors become a message and an exit code: an
:class:`RmcliError` or a usage error becomes one ``rmcli: error: ...`` line (coloured on a
terminal unless ``NO_COLOR`` is set) and exit code 2 (or the error's own code).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, NamedTuple

import click
import typer
from typer.core import TyperGroup

from rmcli.errors import EXIT_INTERRUPTED, RmcliError


class Entry(NamedTuple):
    module: str  # its register(app) adds the command
    short_help: str  # the line in ``rmcli --help``


COMMANDS: dict[str, Entry] = {
    "remove": Entry(
        "rmcli.cli.remove", "Cut out files, folders, globs or stdin; print written paths."
    ),
    "i": Entry("rmcli.cli.rembg", "rembg i: one image to one file, with rembg's flags."),
    "p": Entry("rmcli.cli.rembg", "rembg p: a folder of images to a folder, with rembg's flags."),
    "b": Entry("rmcli.cli.stream", "rembg b: raw RGB24 frames on stdin, rembg's flags."),
    "s": Entry("rmcli.cli.rembg", "rembg s: the HTTP server, with rembg's flags."),
    "models": Entry("rmcli.cli.models", "List, fetch, import, verify, remove weights."),
    "plugins": Entry("rmcli.cli.plugins", "Installed plugins (built-in too): versions and hooks."),
    "backends": Entry("rmcli.cli.plugins", "Backends: availability, reason and providers."),
    "bench": Entry(
        "rmcli.cli.bench_commands", "Time, CPU, memory and threads of backend configurations."
    ),
    "tune": Entry(
        "rmcli.cli.bench_commands", "Find the fastest thread layout here; --save keeps it."
    ),
    "config": Entry("rmcli.cli.config_command", "Show and change settings (config.toml)."),
    "serve": Entry(
        "rmcli.cli.serve_command", "Serve background removal over HTTP until SIGTERM or Ctrl-C."
    ),
}


# shown at the end of ``rmcli --help`` (each command's own are in rmcli.cli.help.EXAMPLES)
ROOT_EXAMPLES = [
    "rmcli remove photo.jpg -o cut.png      # rmcli's own command",
    "rmcli i in.jpg out.png                 # rembg's commands and flags: i, p, b",
    "rmcli remove --help                    # a command's options and examples",
    "rmcli config list --sources            # every setting and where it comes from",
]


class LazyGroup(TyperGroup):
    """A group whose sub-commands are built from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if cmd_name not in self.commands:
            sub = typer.Typer(rich_markup_mode=None)
            importlib.import_module(entry.module).register(sub)
            _use_rmcli_help(sub)
            self.commands.update(typer.main.get_group(sub).commands)
        command = self.commands[cmd_name]
        command.short_help = entry.short_help
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The table's lines, without building any command."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.short_help) for name, entry in COMMANDS.items()])

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """A few examples after the commands."""
        formatter.write("\nExamples:\n" + "".join(f"  {line}\n" for line in ROOT_EXAMPLES))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:  # "did you mean" among every command, built or not
            import difflib

            close = difflib.get_close_matches(args[0], COMMANDS) if args else []
            if close and "Did you mean" not in exc.message:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {close[0]!r}?"
            raise


app = typer.Typer(
    name="rmcli",
    cls=LazyGroup,
    help="Remove image backgrounds with ONNX models, on explicit CPU/GPU backends.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


def _use_rmcli_help(typer_app: typer.Typer) -> None:
    """Every command's and sub-group's --help is rmcli's (panels, examples, --help-all)."""
    from rmcli.cli.help import HelpCommand, HelpGroup

    for command in typer_app.registered_commands:
        command.cls = HelpCommand
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            group.typer_instance.info.cls = HelpGroup
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

    from click.exceptions import ClickException, NoArgsIsHelpError
    from typer import Abort

    from rmcli.cli.progress import show_downloads
    from rmcli.log import install_cli_handler, remove_cli_handler

    install_cli_handler(logging.DEBUG if os.environ.get("RMCLI_DEBUG") else logging.INFO)
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
            import traceback

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
    """Click's message, with a missing input and an unknown option said plainly (in the same
    words whatever Click's version)."""
    from click.exceptions import MissingParameter, NoSuchOption

    if isinstance(exc, MissingParameter) and exc.param is not None:
        name = (exc.param.metavar or exc.param.name or "").upper()
        if exc.param.param_type_name == "argument":
            return f"missing {name}"
    if isinstance(exc, NoSuchOption):
        close = sorted(exc.possibilities or ())
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return f"no such option: {exc.option_name}{hint}"
    message = exc.format_message()
    return message[:1].lower() + message[1:] if message else "usage error"


__all__ = ["app", "error_line", "main"]
