"""``rmcli remove``: cut out the background of files, globs, folders or stdin.

Parse, run a :class:`rmcli.Batch`, print. The options that set settings are generated from the
settings table (:mod:`rmcli.config.settings`), so their names, defaults, choices and
environment variables are written down once.
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from rmcli.cli.frames import frame_progress
from rmcli.cli.matting_notice import say_if_compiling
from rmcli.cli.progress import BatchProgress
from rmcli.config.settings import (
    SETTINGS,
    Layer,
    Setting,
    Settings,
    flag_help,
    format_value,
    takes,
)
from rmcli.errors import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, UsageError
from rmcli.log import one_line


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
            metavar="FILE|DIR|-",
            help="A file (one input; its suffix picks the format), a folder, a storage URL, or "
            "- for stdout. [default: beside each input, as NAME.out.png]",
            rich_help_panel="Output",
        ),
    ] = None,
    recursive: Annotated[
        bool,
        typer.Option(
            "-r",
            "--recursive",
            help="Recurse into folders, keeping structure.",
            rich_help_panel="Output",
        ),
    ] = False,
    only_mask: Annotated[
        bool,
        typer.Option(
            "--only-mask",
            "-om",
            help="Write the 8-bit mask instead of a cut-out.",
            rich_help_panel="Output",
        ),
    ] = False,
    bg_image: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Background image, scaled to cover the output.",
            rich_help_panel="Output",
        ),
    ] = None,
    crop: Annotated[
        bool,
        typer.Option(
            "--crop",
            help="Crop to the pixels with alpha above the threshold.",
            rich_help_panel="Output",
        ),
    ] = False,
    alpha_matting: Annotated[
        bool,
        typer.Option(
            "--alpha-matting",
            "-a",
            help="Refine edges by alpha matting (pymatting).",
            rich_help_panel="Output",
        ),
    ] = False,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Print time per stage, wall time, images/s and peak memory."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "-v", "--verbose", help="Print the settings this run uses, the layout, the providers."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("-q", "--quiet", help="No progress, notes or summary: only errors, warnings."),
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Then watch the input folder: cut out each new image once it is completely "
            "written (Ctrl-C ends).",
            rich_help_panel="Output",
        ),
    ] = False,
    **given: Any,
) -> None:
    """Remove backgrounds; print each written path, report each failed input on stderr."""
    from rmcli.config.settings import resolve
    from rmcli.contracts.output import OutputOptions
    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import Batch
    from rmcli.images.decoding import quiet_pillow_warnings
    from rmcli.images.inputs import images_in

    settings = format_from_output(resolve(flags_given(given)), output)
    quiet_pillow_warnings()  # bad inputs are reported one line each, by rmcli
    options = OutputOptions.from_settings(
        settings, only_mask=only_mask, bg_image=bg_image, crop=crop, alpha_matting=alpha_matting
    )
    if watch and (len(inputs) != 1 or not Path(inputs[0]).is_dir()):
        raise UsageError("--watch takes one input folder")
    remover = Remover(settings=settings)
    if quiet:
        logging.getLogger("rmcli").setLevel(logging.WARNING)
    if watch and not images_in(Path(inputs[0]), recursive):  # nothing there yet: just watch
        remover.session  # noqa: B018  (built now: a bad set-up fails before any file arrives)
        watch_folder(remover, inputs[0], output, options, recursive=recursive, quiet=quiet)
        return
    batch = Batch(remover, inputs, output, recursive=recursive, options=options)
    session = batch.prepare(pin_caller=True)  # fails here, before any image, on a bad set-up
    say_if_compiling(batch.options)
    if verbose:
        _describe(remover, session, batch.pinned, options)
    with (
        BatchProgress(len(batch.jobs), enabled=not quiet) as progress,
        frame_progress(enabled=not quiet and not progress.enabled),  # one clip: its frames
    ):
        try:
            for result in batch.run(on_done=lambda r: progress.step(r.job.label),
                                    handle_signals=True):  # fmt: skip
                if result.error:
                    progress.echo(one_line(result.error), err=True)  # one write, never split
                elif result.job.output is not None:
                    progress.echo(shown_path(result.job.output))
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still say what was done
            batch.stop.set()
    if stats:
        for line in batch.stats.report().lines():
            print(line, file=sys.stderr)
    summary = batch.summary
    if watch and not summary.interrupted:
        watch_folder(remover, inputs[0], output, options, recursive=recursive, quiet=quiet,
                     before=summary)  # fmt: skip
        return
    if summary.interrupted:
        print(summary.line(), file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)
    if not quiet and (len(batch.jobs) > 1 or summary.failed or summary.skipped):
        print(summary.line(), file=sys.stderr)
    if summary.failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def watch_folder(
    remover: Any,
    folder: str,
    output: str | None,
    options: Any,
    *,
    recursive: bool = False,
    delete_input: bool = False,
    quiet: bool = False,
    before: Any = None,
) -> None:
    """Watch ``folder`` until Ctrl-C or SIGTERM; print each written path; exit 1 if any input
    failed (counting the batch ``before`` the watch, if any), else 0."""
    import threading

    from rmcli.engine.interrupt import stop_on_signals
    from rmcli.engine.watch import FolderWatch

    def report(result: Any) -> None:
        if result.error:
            sys.stderr.write(f"{one_line(result.error)}\n")  # one write, never split
        elif result.job.output is not None:
            typer.echo(shown_path(result.job.output))

    log = logging.getLogger("rmcli.cli.remove")
    log.info(f"watching {folder} for new images (Ctrl-C to stop)")
    stop = threading.Event()
    watcher = FolderWatch(
        remover, folder, output, options, recursive=recursive, delete_input=delete_input
    )
    with stop_on_signals(stop, quiet=True):
        counts = watcher.run(report, stop)
    failed = counts.failed + (before.failed if before is not None else 0)
    written = counts.written + (before.written if before is not None else 0)
    if not quiet:
        print(f"{written} written, {failed} failed (watch ended)", file=sys.stderr)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def format_from_output(settings: Settings, output: str | None) -> Settings:
    """The settings with the format that ``-o FILE``'s suffix names, which beats a format from
    the environment or the config file (those are shown as not in effect). ``--format`` on the
    same command line beats the suffix, with a warning that the name and the bytes differ."""
    from rmcli.images.naming import output_file_format

    fmt = output_file_format(output)
    if fmt is None or settings["output_format"] == fmt:
        return settings
    source, layer = settings.source("output_format"), settings.layer("output_format")
    if layer is Layer.FLAG:
        logging.getLogger("rmcli.cli.remove").warning(
            f"-o {output} is written as {settings['output_format']} ({source}), "
            f"not as its suffix says"
        )
        return settings
    before = settings.values["output_format"]
    changed = settings.with_values(f"-o {output}", Layer.FLAG, output_format=fmt)
    if layer is Layer.DEFAULT:
        return changed
    reason = f"{format_value(before.value)} from {source}, because -o names a {fmt} file"
    return replace(changed, overridden={**changed.overridden, "output_format": reason})


def setting_parameters(command: str = "remove") -> list[inspect.Parameter]:
    """One option per row of the settings table that ``command`` takes, named, typed and
    documented by the row: the command's own rows first, then those it shares."""
    return [
        inspect.Parameter(
            key,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[_kind(setting), _option(key, setting)],
        )
        for key, setting in sorted(SETTINGS.items(), key=lambda item: item[1].command != command)
        if takes(command, key)
    ]


def _kind(setting: Setting) -> Any:
    return bool | None if setting.is_switch else str | None


def _option(key: str, setting: Setting) -> Any:
    short = [setting.short] if setting.short else []
    shown = {"help": flag_help(key), "show_default": False, "rich_help_panel": setting.panel}
    if setting.is_switch:
        return typer.Option(f"{setting.option}/--no-{setting.option[2:]}", *short, **shown)
    metavar = setting.metavar or ("N" if setting.type_name == "integer" else "TEXT")
    return typer.Option(setting.option, *short, metavar=metavar, **shown)


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


def _describe(remover, session, pinned, options=None) -> None:
    err = sys.stderr
    settings = remover.settings
    used = used_settings(settings, options)
    print("settings this run uses:", file=err)
    for line in settings.lines(used):
        print(f"  {line}", file=err)
    print(f"  ({len(settings) - len(used)} more that it does not use: rmcli config list)", file=err)
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


# the panels whose settings a run uses only with this backend or executor
PANEL_USED_WITH = {"GPU": ("backend", "cuda-hybrid"), "OpenVINO": ("backend", "openvino"),
                   "Dask": ("executor", "dask")}  # fmt: skip


def used_settings(settings: Settings, options: Any = None, command: str = "remove") -> list[str]:
    """The settings that a run of ``command`` with ``settings`` (and output ``options``) uses,
    as ``-v`` prints them: its options' settings, less those of a backend, executor, model or
    output option it does not use and those of other commands (tune's, serve's), unless set;
    plus any that are not in effect, and why."""
    compose = options.compose if options is not None else None
    applies = {
        "model_path": bool(settings["model_path"]),
        "model_family": bool(settings["model_path"]),
        "cloth_category": settings["model"] == "u2net_cloth_seg",
        "inter_threads": settings["execution_mode"] == "parallel",
        "png_compression": settings["output_format"] == "png",
        "video_smoothing": False,  # clips only
        "crop_threshold": bool(compose and compose.crop),
        "crop_margin": bool(compose and compose.crop),
        "matting_max_pixels": bool(compose and compose.alpha_matting),
        **{k: bool(compose and compose.alpha_matting) for k in SETTINGS if "alpha_matting" in k},
        **{
            k: settings[PANEL_USED_WITH[s.panel][0]] == PANEL_USED_WITH[s.panel][1]
            for k, s in SETTINGS.items()
            if s.panel in PANEL_USED_WITH
        },
    }
    used = []
    for key, setting in SETTINGS.items():
        if key in settings.overridden or settings.given(key):
            if takes(command, key) or key in settings.overridden:
                used.append(key)
        elif takes(command, key) and setting.panel not in ("Tuning", "Service"):
            if applies.get(key, True):
                used.append(key)
    return used


def shown_path(location: object) -> str:
    """A written path for stdout: one line whatever the name holds (odd names quoted)."""
    return one_line(str(location))


def register(app: typer.Typer) -> None:
    if "__signature__" not in vars(remove):  # once per process, however often main() runs
        signature = inspect.signature(remove, eval_str=True)
        fixed = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        remove.__signature__ = signature.replace(parameters=[*fixed, *setting_parameters()])
    app.command()(remove)
