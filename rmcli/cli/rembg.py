"""rembg's own commands on rmcli's engine: ``rmcli i``, ``rmcli p`` and ``rmcli s``.

They take rembg 2.0.86's arguments and flags (``-m``, ``-a``, ``-af``, ``-ab``, ``-ae``,
``-om``, ``-ppm``, ``-bgc R G B A``, ``-x JSON``; ``p -w`` and ``p -d``; ``s -p -h -l -t``)
and give rembg's bytes: colour premultiplied by alpha, RGBA with ``-bgc`` (see
:mod:`rmcli.compat`), so a rembg user changes only the program name. What rmcli cannot
honour is one clear error, not a silent difference. The mapping is documented in docs/usage.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rmcli.compat import COMPOSE_KEYWORDS
from rmcli.config.settings import SETTINGS, shown_default
from rmcli.errors import EXIT_INPUT_FAILED, UsageError


def _default(key: str) -> str:
    """``[default: X]`` for a flag of rembg's that sets ``key`` (the settings' default)."""
    return f"[default: {shown_default(SETTINGS[key])}]"


Model = Annotated[
    str | None,
    typer.Option(
        "-m",
        "--model",
        metavar="NAME",
        help=f"Model name (rmcli models list). {_default('model')}",
        rich_help_panel="Model",
    ),
]
Matting = Annotated[
    bool,
    typer.Option("-a", "--alpha-matting", help="Use alpha matting.", rich_help_panel="Output"),
]
Foreground = Annotated[
    int | None,
    typer.Option(
        "-af",
        "--alpha-matting-foreground-threshold",
        metavar="0-255",
        help=f"Trimap fg. {_default('alpha_matting_foreground_threshold')}",
        rich_help_panel="Output",
    ),
]
Background = Annotated[
    int | None,
    typer.Option(
        "-ab",
        "--alpha-matting-background-threshold",
        metavar="0-255",
        help=f"Trimap bg. {_default('alpha_matting_background_threshold')}",
        rich_help_panel="Output",
    ),
]
Erode = Annotated[
    int | None,
    typer.Option(
        "-ae",
        "--alpha-matting-erode-size",
        metavar="PX",
        help=f"Erode size. {_default('alpha_matting_erode_size')}",
        rich_help_panel="Output",
    ),
]
OnlyMask = Annotated[
    bool,
    typer.Option("-om", "--only-mask", help="Output only the mask.", rich_help_panel="Output"),
]
PostProcess = Annotated[
    bool,
    typer.Option(
        "-ppm", "--post-process-mask", help="Post-process the mask.", rich_help_panel="Output"
    ),
]
Decontaminate = Annotated[
    bool, typer.Option("-dc", "--decontaminate", help="rembg only: not supported by rmcli.")
]
Vitmatte = Annotated[bool, typer.Option("-vm", "--vitmatte", help="rembg only: not supported.")]
BgColor = Annotated[
    tuple[int, int, int, int] | None,
    typer.Option(
        "-bgc",
        "--bgcolor",
        metavar="R G B A",
        help="Background colour, 0-255 each. [default: none, transparent]",
        rich_help_panel="Output",
    ),
]
Extras = Annotated[
    str | None,
    typer.Option(
        "-x",
        "--extras",
        metavar="JSON",
        help="More options as JSON, e.g. '{\"alpha_matting\": true}'.",
    ),
]

# -x keys rmcli understands: rembg's remove() keywords, and model_path for custom sessions
EXTRAS = (*COMPOSE_KEYWORDS, "model_path")


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
    """rembg's flags as (settings flags for ``resolve``, ``rembg_options`` keywords).

    As in rembg, ``-x`` keys override the flags, ``-bgc`` defaults to 0,0,0,0 (composited
    like any colour) and ``-m u2net_custom|dis_custom|ben_custom`` loads ``-x``'s model_path.
    """
    from rmcli.compat import CUSTOM_SESSIONS

    if decontaminate or vitmatte:
        name = "-dc (decontaminate)" if decontaminate else "-vm (vitmatte)"
        raise UsageError(f"{name} is rembg-only: rmcli does not support it; -a refines edges")
    thresholds = {
        "alpha_matting_foreground_threshold": fg,
        "alpha_matting_background_threshold": bg,
        "alpha_matting_erode_size": erode,
    }  # not given: rembg_options has rembg's defaults
    compose: dict[str, Any] = {
        "alpha_matting": alpha_matting,
        **{key: value for key, value in thresholds.items() if value is not None},
        "only_mask": only_mask,
        "post_process_mask": post_process,
        "bgcolor": tuple(bgcolor) if bgcolor is not None else (0, 0, 0, 0),
    }
    compose.update(_extras(extras))
    model_path = compose.pop("model_path", None)
    family = CUSTOM_SESSIONS.get(model or "")
    if family is None and model_path is not None:
        raise UsageError(
            f"-x model_path needs -m {', '.join(CUSTOM_SESSIONS)} (the model's family)"
        )
    if family is not None:
        if not model_path:
            raise UsageError(f'-m {model} needs -x \'{{"model_path": "FILE"}}\'')
        flags = {"model_path": (str(model_path), "-x model_path"),
                 "model_family": (family, f"flag -m {model}")}  # fmt: skip
    else:
        flags = {"model": (model, "flag -m")} if model is not None else {}
    return flags, compose


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
    from rmcli.images.naming import output_file_format

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
    compose: dict[str, Any],
    *,
    recursive: bool = False,
    watch: bool = False,
    delete_input: bool = False,
    single_file: bool = False,
) -> None:
    from dataclasses import replace

    from rmcli.cli.matting_notice import say_if_compiling
    from rmcli.cli.remove import shown_path, watch_folder
    from rmcli.compat import rembg_options
    from rmcli.config.settings import resolve
    from rmcli.contracts.output import OutputOptions
    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import Batch
    from rmcli.images.decoding import quiet_pillow_warnings
    from rmcli.log import one_line

    settings = resolve(flags)
    quiet_pillow_warnings()
    rembg = rembg_options(settings=settings, **compose)
    options = replace(OutputOptions.from_settings(settings), fmt="png", compose=rembg)
    remover = Remover(settings=settings)
    batch = Batch(remover, inputs, output, recursive=recursive, options=options,
                  single_file=single_file)  # fmt: skip
    batch.prepare(pin_caller=True)
    say_if_compiling(batch.options)
    for result in batch.run(handle_signals=True):
        if result.error:
            print(one_line(result.error), file=sys.stderr)
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


def s(
    port: Annotated[int, typer.Option("-p", "--port", metavar="PORT", help="Port.")] = 7000,
    host: Annotated[
        str | None,
        typer.Option(
            "-h",
            "--host",
            metavar="HOST",
            help="Address to listen on (default: the serve_host setting, 127.0.0.1; "
            "rembg's is 0.0.0.0).",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("-l", "--log_level", "--log-level", metavar="LEVEL", help="Log level.")
    ] = "info",
    threads: Annotated[
        int | None,
        typer.Option("-t", "--threads", metavar="N", help="Inferences at once (serve_slots)."),
    ] = None,
    no_ui: Annotated[
        bool, typer.Option("--no-ui", help="Accepted for rembg's sake (the page costs no CPU).")
    ] = False,
) -> None:
    """rembg s: the HTTP server (rembg's /api/remove, rmcli's API and web page)."""
    from rmcli.cli.serve_command import serve_with

    flags: dict[str, Any] = {"serve_port": (port, "flag -p")}
    if host is not None:
        flags["serve_host"] = (host, "flag -h")
    if threads is not None:
        flags["serve_slots"] = (threads, "flag -t")
    serve_with(flags, log_level)


def register(app: typer.Typer) -> None:
    app.command()(i)
    app.command()(p)
    app.command(context_settings={"help_option_names": ["--help"]})(s)  # -h is rembg's --host
