"""``rmcli b``: rembg's raw-frame stream command, with rembg 2.0.86's flags (see
:mod:`rmcli.cli.rembg`)."""

from __future__ import annotations

import sys
import threading
from typing import Annotated

import typer

from rmcli.cli.frames import frame_progress
from rmcli.cli.rembg import (
    Background,
    BgColor,
    Decontaminate,
    Erode,
    Extras,
    Foreground,
    Matting,
    Model,
    OnlyMask,
    PostProcess,
    Vitmatte,
)
from rmcli.config.settings import flag_help
from rmcli.errors import EXIT_INTERRUPTED, UsageError


def b(
    width: Annotated[int, typer.Argument(metavar="WIDTH", help="Width of each RGB24 frame.")],
    height: Annotated[int, typer.Argument(metavar="HEIGHT", help="Height of each RGB24 frame.")],
    output: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output_specifier",
            "--output",
            metavar="PATTERN",
            help="printf-style file name of each frame, e.g. frames/out-%05d.png (numbered "
            "from 0). Without it: PNG images one after the other on stdout, as rembg b.",
        ),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option("--raw", help="Write raw RGBA frames (WIDTH x HEIGHT x 4 bytes) to stdout."),
    ] = False,
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
    backend: Annotated[str | None, typer.Option(metavar="NAME", help=flag_help("backend"))] = None,
    video_smoothing: Annotated[
        bool, typer.Option("--video-smoothing", help=flag_help("video_smoothing"))
    ] = False,
) -> None:
    """rembg b: raw RGB24 frames on stdin, with rembg's flags, e.g.
    ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | rmcli b 1280 720 -o out/f-%05d.png"""
    from rmcli.cli.rembg import rembg_settings
    from rmcli.compat import rembg_options
    from rmcli.config.settings import resolve
    from rmcli.engine.interrupt import stop_on_signals
    from rmcli.engine.remover import Remover
    from rmcli.images.compose import check_options
    from rmcli.video.rawframes import RawStream

    if width <= 0 or height <= 0:
        raise UsageError("WIDTH and HEIGHT must be positive")
    if raw and output:
        raise UsageError("--raw writes to stdout; it does not go with -o")
    if output:
        try:
            output % 0
        except (TypeError, ValueError):
            raise UsageError(f"-o {output!r} needs one printf-style number, e.g. %05d") from None
    flags, output_options = rembg_settings(
        model, alpha_matting, fg, bg, erode, only_mask, post_process, decontaminate, vitmatte,
        bgcolor, extras,
    )  # fmt: skip
    flags["backend"] = (backend, "flag --backend")
    flags["video_smoothing"] = (video_smoothing or None, "flag --video-smoothing")
    settings = resolve({k: v for k, v in flags.items() if v[0] is not None})
    if width * height > settings["max_pixels"]:
        raise UsageError(
            f"{width}x{height} frames are over the limit of {settings['max_pixels']:,} pixels "
            "set by max_pixels (RMCLI_MAX_PIXELS)"
        )
    compose_options = rembg_options(settings=settings, **output_options)  # rembg's pixels
    check_options(compose_options)
    remover = Remover(settings=settings)
    _ = remover.session  # built before the first frame: a bad model or backend fails at once
    stream = RawStream(remover, width, height, compose_options, output, raw)
    stop = threading.Event()
    with stop_on_signals(stop), frame_progress():
        written = stream.run(sys.stdin.buffer, sys.stdout.buffer, stop)
    if stop.is_set():
        print(f"rmcli: interrupted after {written} frames", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(b)
