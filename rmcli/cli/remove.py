"""``rmcli remove``: cut out the background of files, globs, folders or stdin."""

from __future__ import annotations

import sys
import threading
from typing import Annotated

import typer

from rmcli.errors import EXIT_INPUT_FAILED, EXIT_INTERRUPTED, UsageError
from rmcli.settings import flag_help


def remove(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders, globs (quoted ok), or - for stdin.")
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "-o", "--output", help="Output folder, or - for stdout. Default: beside input."
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("-r", "--recursive", help="Recurse into folders, keeping structure.")
    ] = False,
    model: Annotated[str | None, typer.Option(help=flag_help("model"))] = None,
    model_path: Annotated[
        str | None, typer.Option(help="Custom ONNX weights file, used instead of --model.")
    ] = None,
    model_family: Annotated[
        str | None, typer.Option(help="Family of --model-path: u2net, isnet or birefnet.")
    ] = None,
    cloth_category: Annotated[
        str | None, typer.Option(help="u2net_cloth_seg: upper, lower, full or attire.")
    ] = None,
    offline: Annotated[
        bool | None, typer.Option("--offline", help="Never download weights.", show_default=False)
    ] = None,
    backend: Annotated[str | None, typer.Option(help=flag_help("backend"))] = None,
    intra_threads: Annotated[str | None, typer.Option(help=flag_help("intra_threads"))] = None,
    inter_threads: Annotated[int | None, typer.Option(help=flag_help("inter_threads"))] = None,
    cpu_binding: Annotated[str | None, typer.Option(help=flag_help("cpu_binding"))] = None,
    execution_mode: Annotated[str | None, typer.Option(help=flag_help("execution_mode"))] = None,
    allow_spinning: Annotated[
        bool | None,
        typer.Option(
            "--allow-spinning/--no-allow-spinning",
            help=flag_help("allow_spinning"),
            show_default=False,
        ),
    ] = None,
    shared_threadpool: Annotated[
        bool | None,
        typer.Option(
            "--shared-threadpool/--no-shared-threadpool",
            help=flag_help("shared_threadpool"),
            show_default=False,
        ),
    ] = None,
    graph_optimization: Annotated[
        str | None, typer.Option(help=flag_help("graph_optimization"))
    ] = None,
    device_id: Annotated[int | None, typer.Option(help=flag_help("device_id"))] = None,
    gpu_mem_limit: Annotated[int | None, typer.Option(help=flag_help("gpu_mem_limit"))] = None,
    strict_device: Annotated[
        bool | None,
        typer.Option(
            "--strict-device/--no-strict-device",
            help=flag_help("strict_device"),
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="Output format: png, webp or jpg.")
    ] = None,
    executor: Annotated[
        str | None, typer.Option(help="Where the batch runs: local (default) or dask.")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address for --executor dask (default: local cluster)."),
    ] = None,
    only_mask: Annotated[
        bool, typer.Option("--only-mask", "-om", help="Write the 8-bit mask instead of a cut-out.")
    ] = False,
    bgcolor: Annotated[
        str | None,
        typer.Option(help="Background colour: name, #rrggbb[aa] or r,g,b[,a]."),
    ] = None,
    bg_image: Annotated[
        str | None, typer.Option(help="Background image, scaled to cover the output.")
    ] = None,
    premultiplied: Annotated[
        bool | None,
        typer.Option("--premultiplied", help="Colour scaled by alpha, byte-identical to rembg."),
    ] = None,
    crop: Annotated[
        bool, typer.Option("--crop", help="Crop to the pixels with alpha above the threshold.")
    ] = False,
    margin: Annotated[
        int | None, typer.Option(help="With --crop: pixels kept around the box.")
    ] = None,
    crop_threshold: Annotated[
        int | None, typer.Option(help="With --crop: alpha up to this counts as empty (0-254).")
    ] = None,
    alpha_matting: Annotated[
        bool,
        typer.Option("--alpha-matting", "-a", help="Refine edges by alpha matting (pymatting)."),
    ] = False,
    matting_fg: Annotated[
        int | None,
        typer.Option(
            "--alpha-matting-foreground-threshold", "-af", help="Matting: sure foreground above."
        ),
    ] = None,
    matting_bg: Annotated[
        int | None,
        typer.Option(
            "--alpha-matting-background-threshold", "-ab", help="Matting: sure background below."
        ),
    ] = None,
    matting_erode: Annotated[
        int | None,
        typer.Option("--alpha-matting-erode-size", "-ae", help="Matting: erosion square size."),
    ] = None,
    post_process_mask: Annotated[
        bool | None,
        typer.Option("--post-process-mask", "-ppm", help="Smooth the mask like rembg -ppm."),
    ] = None,
    skip_existing: Annotated[
        bool | None,
        typer.Option("--skip-existing", help="Leave inputs whose output already exists."),
    ] = None,
    inflight: Annotated[
        int | None, typer.Option(help="Images in flight at once (local executor).")
    ] = None,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Print time per stage, wall time, images/s and peak memory."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Print effective settings and backend layout.")
    ] = False,
) -> None:
    """Remove backgrounds; print each written path, report each failed input on stderr."""

    from rmcli.batch import OutputOptions
    from rmcli.compose import ComposeOptions, check_options
    from rmcli.decoding import quiet_pillow_warnings
    from rmcli.executors import in_input_order
    from rmcli.inputs import STDIO, plan_jobs, without_existing
    from rmcli.interrupt import stop_on_interrupt
    from rmcli.plugins import get_executor
    from rmcli.remover import Remover
    from rmcli.settings import resolve
    from rmcli.stats import BatchStats, collecting

    timing = BatchStats()
    flags = {
        "model": model,
        "model_path": model_path,
        "model_family": model_family,
        "cloth_category": cloth_category,
        "offline": offline,
        "backend": backend,
        "intra_threads": intra_threads,
        "inter_threads": inter_threads,
        "cpu_binding": cpu_binding,
        "execution_mode": execution_mode,
        "allow_spinning": _switch(allow_spinning, "allow-spinning"),
        "shared_threadpool": _switch(shared_threadpool, "shared-threadpool"),
        "graph_optimization": graph_optimization,
        "device_id": device_id,
        "gpu_mem_limit": gpu_mem_limit,
        "strict_device": _switch(strict_device, "strict-device"),
        "output_format": (fmt, "flag --format"),
        "executor": executor,
        "dask_scheduler": (scheduler, "flag --scheduler"),
        "bgcolor": bgcolor,
        "premultiplied": premultiplied,
        "crop_margin": (margin, "flag --margin"),
        "crop_threshold": crop_threshold,
        "alpha_matting_foreground_threshold": matting_fg,
        "alpha_matting_background_threshold": matting_bg,
        "alpha_matting_erode_size": matting_erode,
        "post_process_mask": post_process_mask,
        "skip_existing": skip_existing,
        "inflight": inflight,
    }
    settings = resolve(flags)
    quiet_pillow_warnings()  # bad inputs are reported one line each, by rmcli
    compose_options = ComposeOptions.from_settings(
        settings, only_mask=only_mask, bg_image=bg_image, crop=crop, alpha_matting=alpha_matting
    )
    check_options(compose_options)
    options = OutputOptions(
        fmt=settings["output_format"],
        png_compression=settings["png_compression"],
        compose=compose_options,
    )
    jobs = plan_jobs(inputs, output, options.fmt, recursive)
    if not jobs:
        raise UsageError("no input images found")
    if output == STDIO and len(jobs) > 1:
        raise UsageError("-o - (stdout) takes exactly one input")
    skipped = 0
    if settings["skip_existing"]:
        jobs, skipped = without_existing(jobs)
        if not jobs:
            print(f"0 written, {skipped} skipped (output exists), 0 failed", file=sys.stderr)
            return
    remover = Remover(settings=settings)
    runner = get_executor(settings["executor"])
    session = None
    if runner.in_process:  # built once, before the first image; fails early and clearly
        session = remover.session
    if verbose:
        _describe(remover, session)
    pinned = None
    if session is not None:  # only now: ORT workers must not inherit the caller's mask
        pinned = remover.backend.pin_calling_thread(settings)
    if verbose and pinned:
        print(f"calling thread pinned to CPUs {pinned}", file=sys.stderr)
    progress = _Progress(len(jobs))
    failed = done = 0
    stop = threading.Event()
    with stop_on_interrupt(stop), collecting(timing):
        # progress moves as results finish; paths and errors are printed in input order
        finished = runner.run(remover, jobs, options, stop)
        for result in in_input_order(finished, on_done=lambda r: progress.step(r.job.label)):
            done += 1
            timing.count(failed=result.error is not None)
            if result.error:
                failed += 1
                progress.clear()
                print(result.error, file=sys.stderr)
            elif result.job.output is not None:
                progress.clear()
                typer.echo(str(result.job.output))
    progress.clear()
    if stats:
        for line in timing.report().lines():
            print(line, file=sys.stderr)
    skip_note = f", {skipped} skipped (output exists)" if skipped else ""
    summary = f"{done - failed} written{skip_note}, {failed} failed"
    if done < len(jobs):
        print(f"{summary}, {len(jobs) - done} not started (interrupted)", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED)
    if len(jobs) > 1 or failed or skipped:
        print(summary, file=sys.stderr)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _switch(value: bool | None, name: str) -> tuple[bool | None, str]:
    """A --x/--no-x flag's value and the source naming the form that was given."""
    return value, f"flag --{'' if value else 'no-'}{name}"


def _describe(remover, session) -> None:
    settings = remover.settings
    err = sys.stderr
    print("settings:", file=err)
    for line in settings.lines():
        print(f"  {line}", file=err)
    print(f"backend {remover.backend.name}: {remover.backend.describe(settings)}", file=err)
    if session is None:  # built on the workers, with intra_threads (if unset) = their nthreads
        print(
            f"executor {settings['executor']}: sessions are built on the workers (the layout "
            "above is this machine's; an unset intra_threads becomes each worker's nthreads)",
            file=err,
        )
        return
    print(f"model {remover.model.name}: {session.plan.weights_path}", file=err)
    print(f"active providers: {', '.join(session.active_providers)}", file=err)
    print(f"session created in {session.seconds_to_create:.3f} s", file=err)


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
    app.command(no_args_is_help=True)(remove)
