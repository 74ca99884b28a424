"""rembg's own commands on rmcli's engine: ``rmcli i INPUT OUTPUT`` and ``rmcli p IN OUT``.

They take rembg 2.0.86's arguments and flags (``-m``, ``-a``, ``-af``, ``-ab``, ``-ae``,
``-om``, ``-ppm``, ``-bgc R G B A``, ``-x JSON``; ``p -w`` and ``p -d``), so a rembg user
changes only the program name. What rmcli cannot honour is one clear error, not a silent
difference. The mapping is documented in docs/usage.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rmcli.errors import EXIT_INPUT_FAILED, UsageError

Model = Annotated[str | None, typer.Option("-m", "--model", metavar="NAME", help="Model name.")]
Matting = Annotated[bool, typer.Option("-a", "--alpha-matting", help="Use alpha matting.")]
Foreground = Annotated[
    int | None,
    typer.Option("-af", "--alpha-matting-foreground-threshold", metavar="N", help="Trimap fg."),
]
Background = Annotated[
    int | None,
    typer.Option("-ab", "--alpha-matting-background-threshold", metavar="N", help="Trimap bg."),
]
Erode = Annotated[
    int | None, typer.Option("-ae", "--alpha-matting-erode-size", metavar="N", help="Erode size.")
]
OnlyMask = Annotated[bool, typer.Option("-om", "--only-mask", help="Output only the mask.")]
PostProcess = Annotated[
    bool, typer.Option("-ppm", "--post-process-mask", help="Post-process the mask.")
]
Decontaminate = Annotated[
    bool, typer.Option("-dc", "--decontaminate", help="rembg only: not supported by rmcli.")
]
Vitmatte = Annotated[bool, typer.Option("-vm", "--vitmatte", help="rembg only: not supported.")]
BgColor = Annotated[
    tuple[int, int, int, int] | None,
    typer.Option("-bgc", "--bgcolor", metavar="R G B A", help="Background colour (R G B A)."),
]
Extras = Annotated[
    str | None, typer.Option("-x", "--extras", metavar="JSON", help="More options as JSON.")
]

# -x keys rmcli understands: rembg's keyword -> rmcli's setting or output option
EXTRAS = {
    "alpha_matting": "alpha_matting",
    "alpha_matting_foreground_threshold": "alpha_matting_foreground_threshold",
    "alpha_matting_background_threshold": "alpha_matting_background_threshold",
    "alpha_matting_erode_size": "alpha_matting_erode_size",
    "only_mask": "only_mask",
    "post_process_mask": "post_process_mask",
    "bgcolor": "bgcolor",
}
OUTPUT_ONLY = {"alpha_matting", "only_mask"}  # per-run output options, not settings


def rembg_settings(
    model: str | None,
    alpha_matting: bool,
    fg: int | None,
    bg: int | None,
    erode: int | None,
    only_mask: bool,
    post_process: bool,
    decontaminate: bool,
    vitmatte: bool,
    bgcolor: tuple[int, int, int, int] | None,
    extras: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """rembg's flags as (settings flags for ``resolve``, output options)."""
    if decontaminate or vitmatte:
        name = "-dc (decontaminate)" if decontaminate else "-vm (vitmatte)"
        raise UsageError(f"{name} is rembg-only: rmcli does not support it; -a refines edges")
    values: dict[str, Any] = {
        "model": (model, "flag -m"),
        "alpha_matting_foreground_threshold": (fg, "flag -af"),
        "alpha_matting_background_threshold": (bg, "flag -ab"),
        "alpha_matting_erode_size": (erode, "flag -ae"),
        "post_process_mask": (True if post_process else None, "flag -ppm"),
    }
    output = {"alpha_matting": alpha_matting, "only_mask": only_mask}
    if bgcolor is not None and tuple(bgcolor) != (0, 0, 0, 0):  # rembg's default: no colour
        values["bgcolor"] = (",".join(str(v) for v in bgcolor), "flag -bgc")
    for key, value in _extras(extras).items():
        if key in OUTPUT_ONLY:
            output[key] = bool(value)
        else:
            if key == "bgcolor" and isinstance(value, list | tuple):
                value = ",".join(str(v) for v in value)
            values[EXTRAS[key]] = (value, f"-x {key}")
    return {k: v for k, v in values.items() if v[0] is not None}, output


def _extras(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        extras = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"-x {text!r} is not JSON: {exc.msg}") from None
    if not isinstance(extras, dict):
        raise UsageError(f"-x {text!r} is not a JSON object")
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        raise UsageError(
            f"-x {', '.join(unknown)}: not supported by rmcli (it takes {', '.join(EXTRAS)})"
        )
    return extras


def i(
    input: Annotated[str | None, typer.Argument(metavar="INPUT", help="Image file, or -.")] = None,
    output: Annotated[
        str | None, typer.Argument(metavar="OUTPUT", help="Output file, or - for stdout.")
    ] = None,
    model: Model = None,
    alpha_matting: Matting = False,
    fg: Foreground = None,
    bg: Background = None,
    erode: Erode = None,
    only_mask: OnlyMask = False,
    post_process: PostProcess = False,
    decontaminate: Decontaminate = False,
    vitmatte: Vitmatte = False,
    bgcolor: BgColor = None,
    extras: Extras = None,
) -> None:
    """rembg i: one file (or stdin) to one file (or stdout), with rembg's flags."""
    from rmcli.engine.runner import output_file_format

    if input is None:
        if sys.stdin.isatty():
            raise UsageError("missing INPUT (an image file, or - for stdin)")
        input = "-"
    if output is None:  # rembg: NAME.out.png beside a file on a terminal, else stdout
        output = None if input != "-" and sys.stdout.isatty() else "-"
    flags, options = rembg_settings(
        model, alpha_matting, fg, bg, erode, only_mask, post_process, decontaminate, vitmatte,
        bgcolor, extras,
    )  # fmt: skip
    as_file = output not in (None, "-") and output_file_format(output) is None
    _run([input], output, flags, options, single_file=as_file)


def p(
    input: Annotated[str, typer.Argument(metavar="INPUT_DIR", help="Folder of images.")],
    output: Annotated[str, typer.Argument(metavar="OUTPUT_DIR", help="Folder for cut-outs.")],
    model: Model = None,
    alpha_matting: Matting = False,
    fg: Foreground = None,
    bg: Background = None,
    erode: Erode = None,
    only_mask: OnlyMask = False,
    post_process: PostProcess = False,
    decontaminate: Decontaminate = False,
    vitmatte: Vitmatte = False,
    watch: Annotated[
        bool, typer.Option("-w", "--watch", help="Watch the folder for new images.")
    ] = False,
    delete_input: Annotated[
        bool,
        typer.Option("-d", "--delete-input", "--delete_input", help="Delete each input once done."),
    ] = False,
    accept_usage_cost: Annotated[
        bool,
        typer.Option("--accept-usage-cost", help="Accepted for rembg's sake (no paid models)."),
    ] = False,
    bgcolor: BgColor = None,
    extras: Extras = None,
) -> None:
    """rembg p: every image of a folder (and its sub-folders) into OUTPUT_DIR as NAME.png."""
    if not Path(input).is_dir():
        raise UsageError(f"{input}: not a folder (rmcli p takes INPUT_DIR OUTPUT_DIR)")
    flags, options = rembg_settings(
        model, alpha_matting, fg, bg, erode, only_mask, post_process, decontaminate, vitmatte,
        bgcolor, extras,
    )  # fmt: skip
    flags["skip_existing"] = (True, "rmcli p (rembg keeps existing outputs)")
    _run([input], output, flags, options, recursive=True, watch=watch, delete_input=delete_input)


def _run(
    inputs: list[str],
    output: str | None,
    flags: dict[str, Any],
    output_options: dict[str, Any],
    *,
    recursive: bool = False,
    watch: bool = False,
    delete_input: bool = False,
    single_file: bool = False,
) -> None:
    from rmcli.cli.remove import shown_path, watch_folder
    from rmcli.config.settings import resolve
    from rmcli.contracts.output import OutputOptions
    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import Batch
    from rmcli.images.decoding import quiet_pillow_warnings

    settings = resolve(flags)
    quiet_pillow_warnings()
    options = OutputOptions.from_settings(settings, **output_options)
    remover = Remover(settings=settings)
    batch = Batch(remover, inputs, output, recursive=recursive, options=options,
                  single_file=single_file)  # fmt: skip
    batch.prepare(pin_caller=True)
    for result in batch.run(handle_signals=True):
        if result.error:
            print(result.error, file=sys.stderr)
            continue
        if result.job.output is not None:
            typer.echo(shown_path(result.job.output))
        if delete_input and result.job.source is not None:
            Path(result.job.source).unlink(missing_ok=True)
    if delete_input:  # rembg -d also deletes inputs whose output already existed
        for job in batch.skipped_jobs:
            if job.source is not None:
                Path(job.source).unlink(missing_ok=True)
    summary = batch.summary
    if len(batch.jobs) > 1 or summary.failed or summary.skipped:
        print(summary.line(), file=sys.stderr)
    if watch and not summary.interrupted:
        watch_folder(remover, inputs[0], output, options, recursive=recursive,
                     delete_input=delete_input, before=summary)  # fmt: skip
        return
    if summary.failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def register(app: typer.Typer) -> None:
    app.command()(i)
    app.command()(p)
