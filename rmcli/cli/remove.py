"""``rmcli remove``: cut out the background of files, globs, folders or stdin.

Parse, run a :class:`rmcli.Batch`, print. The options that set settings are generated from the
settings table (:mod:`rmcli.config.settings`), so their names, defaults, choices and
environment variables are written down once.
"""

from __future__ import annotations

import inspect
import sys
from typing import Annotated, Any

import typer

from rmcli.config.settings import SETTINGS, Setting, flag_help
from rmcli.errors import EXIT_INPUT_FAILED, EXIT_INTERRUPTED


def remove(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Image files, folders, globs (quoted ok), or - for stdin.", metavar="INPUT..."
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            metavar="DIR|-",
            help="Output folder or storage URL, or - for stdout. [default: beside each "
            "input, as NAME.out.png]",
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Recurse into folders, keeping structure.")
    ] = False,
    only_mask: Annotated[
        bool, typer.Option("--only-mask", "-om", help="Write the 8-bit mask instead of a cut-out.")
    ] = False,
    bg_image: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Background image, scaled to cover the output."),
    ] = None,
    crop: Annotated[
        bool, typer.Option("--crop", help="Crop to the pixels with alpha above the threshold.")
    ] = False,
    alpha_matting: Annotated[
        bool,
        typer.Option("--alpha-matting", "-a", help="Refine edges by alpha matting (pymatting)."),
    ] = False,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Print time per stage, wall time, images/s and peak memory."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Print effective settings and thread layout.")
    ] = False,
    **given: Any,
) -> None:
    """Remove backgrounds; print each written path, report each failed input on stderr."""
    from rmcli.config.settings import resolve
    from rmcli.contracts.output import OutputOptions
    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import Batch
    from rmcli.images.decoding import quiet_pillow_warnings

    settings = resolve(flags_given(given))
    quiet_pillow_warnings()  # bad inputs are reported one line each, by rmcli
    options = OutputOptions.from_settings(
        settings, only_mask=only_mask, bg_image=bg_image, crop=crop, alpha_matting=alpha_matting
    )
    remover = Remover(settings=settings)
    batch = Batch(remover, inputs, output, recursive=recursive, options=options)
    session = batch.prepare(pin_caller=True)  # fails here, before any image, on a bad set-up
    if verbose:
        _describe(remover, session, batch.pinned)
    progress = _Progress(len(batch.jobs))
    try:
        for result in batch.run(on_done=lambda r: progress.step(r.job.label), handle_signals=True):
            progress.clear()
            if result.error:
                print(result.error, file=sys.stderr)
            elif result.job.output is not None:
                typer.echo(str(result.job.output))
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still say what was done
        batch.stop.set()
    progress.clear()
    if stats:
        for line in batch.stats.report().lines():
            print(line, file=sys.stderr)
    summary = batch.summary
    if summary.interrupted:
        print(summary.line(), file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)
    if len(batch.jobs) > 1 or summary.failed or summary.skipped:
        print(summary.line(), file=sys.stderr)
    if summary.failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def setting_parameters() -> list[inspect.Parameter]:
    """One option per row of the settings table, named, typed and documented by the row."""
    return [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[_kind(setting), _option(key, setting)],
        )
        for key, setting in SETTINGS.items()
    ]


def _kind(setting: Setting) -> Any:
    return bool | None if setting.is_switch else str | None


def _option(key: str, setting: Setting) -> Any:
    short = [setting.short] if setting.short else []
    if setting.is_switch:
        switch = f"{setting.option}/--no-{setting.option[2:]}"
        return typer.Option(switch, *short, help=flag_help(key), show_default=False)
    metavar = setting.metavar or ("N" if setting.type_name == "integer" else "TEXT")
    return typer.Option(
        setting.option, *short, help=flag_help(key), metavar=metavar, show_default=False
    )


def flags_given(values: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """The settings given on the command line, each with the flag (form) that gave it."""
    flags = {}
    for key, value in values.items():
        if value is None:
            continue
        option = SETTINGS[key].option
        if SETTINGS[key].is_switch and not value:
            option = f"--no-{option[2:]}"
        flags[key] = (value, f"flag {option}")
    return flags


def _describe(remover, session, pinned) -> None:
    err = sys.stderr
    settings = remover.settings
    print("settings:", file=err)
    for line in settings.lines():
        print(f"  {line}", file=err)
    print(f"backend {remover.backend.name}, thread layout:", file=err)
    for key, value in {**remover.layout.describe(), **remover.backend.describe(settings)}.items():
        print(f"  {key} = {value}", file=err)
    if session is None:  # built on the workers, for their own cores
        print(
            f"executor {settings['executor']}: sessions are built on the workers (the layout "
            "above is this machine's; each worker sizes it to its own threads)",
            file=err,
        )
        return
    print(f"model {remover.model.name}: {session.plan.weights_path}", file=err)
    print(f"active providers: {', '.join(session.active_providers)}", file=err)
    print(f"session created in {session.seconds_to_create:.3f} s", file=err)
    if pinned:
        print(f"calling thread pinned to CPUs {pinned}", file=err)


class _Progress:
    """A one-line progress counter on stderr, shown only on a terminal and for batches."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.active = total > 1 and sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.active:
            sys.stderr.write(f"\r\x1b[K[{self.done}/{self.total}] {label}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.active:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def register(app: typer.Typer) -> None:
    if "__signature__" not in vars(remove):  # once per process, however often main() runs
        signature = inspect.signature(remove, eval_str=True)
        fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        remove.__signature__ = signature.replace(parameters=[*fixed, *setting_parameters()])
    app.command(no_args_is_help=True)(remove)
