"""``rmcli bench``: the configuration table for this machine and model."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from rmcli.errors import EXIT_INPUT_FAILED, UsageError


def bench(
    images: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files, folders or globs. Default: 3 sample photos shipped with rmcli."
        ),
    ] = None,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="Measure this backend (repeatable). Default: the built-in comparison set.",
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE setting for every configuration (repeatable)."),
    ] = None,
    runs: Annotated[int, typer.Option("-n", "--runs", help="Timed passes over the images.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown table.")] = False,
) -> None:
    """Measure configurations, each in a fresh process: warm-up, then RUNS timed passes.

    Per configuration: session creation time, median and p90 time per image (mask only:
    pre-processing, inference, post-processing; decoding is outside), images per second,
    CPU use (cores busy and share of the allowed cores), peak memory, threads, and the
    providers ONNX Runtime really uses, the precision, and the mask error (mean absolute
    difference, 0-255, mean and worst image) against the first configuration that ran at fp32
    on the CPU provider alone. Without --backend: openmp-env with ORT defaults, openmp-env
    with OMP_NUM_THREADS = allowed cores, cpu-pinned defaults, cpu-pinned with the settings
    saved in the config file (e.g. by `rmcli tune --save`), then openvino at fp32 and at bf16
    (bf16 only where the CPU has it natively) when onnxruntime-openvino is installed.
    """
    from rmcli.cpus import usable_cpu_count
    from rmcli.tools import bench as core

    if as_json and markdown:
        raise UsageError("--json and --markdown exclude each other")
    if runs < 1:
        raise UsageError("-n must be at least 1")
    values = core.parse_sets(sets or [])
    paths = core.find_images(images or [])
    if backends:
        from rmcli.engine.registry import get_backend

        for name in backends:
            get_backend(name)  # an unknown name fails here, with the known ones listed
        configurations = core.backend_configurations(backends, values)
    else:
        configurations = core.default_configurations(
            usable_cpu_count(), values, saved=core.layout_saved()
        )

    def progress(line: str) -> None:
        print(f"rmcli: {line}", file=sys.stderr, flush=True)

    rows = core.bench(configurations, paths, runs, progress)
    if as_json:
        typer.echo(json.dumps(core.report(rows, paths, runs), indent=2))
    elif markdown:
        typer.echo(core.format_markdown(rows))
    else:
        typer.echo(core.format_text(rows))
    failed = [row for row in rows if row.error]
    for row in failed:
        print(f"rmcli: {row.configuration.label}: {row.error}", file=sys.stderr)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def tune(
    model: Annotated[str | None, typer.Option(help="Model to tune for (default: setting).")] = None,
    budget: Annotated[
        float, typer.Option(help="Seconds of measuring (session building included).")
    ] = 60.0,
    save: Annotated[
        bool, typer.Option("--save", help="Write the winner to the config file.")
    ] = False,
    images: Annotated[
        list[str] | None,
        typer.Argument(help="Images to measure on. Default: 3 sample photos shipped with rmcli."),
    ] = None,
) -> None:
    """Find the fastest layout for a model on this machine, within the mask error budget.

    Searches cpu-pinned's intra threads, execution mode and inter threads, spinning and core
    binding; with onnxruntime-openvino also openvino's threads and precision (fp32, bf16
    where native). Layouts whose masks differ from fp32 on the CPU provider by more than
    the mask_error_budget setting (mean, 0-255 scale) are rejected first.
    All candidates run interleaved in one fresh process; after each round the slower half
    is dropped and the rest get twice the images (successive halving), within --budget.
    """
    from rmcli.tools import bench as core
    from rmcli.tools import tune as search

    paths = core.find_images(images or [])
    print(f"rmcli: tuning for up to {budget:.0f} s ...", file=sys.stderr, flush=True)
    result = search.run_tune(model, budget, paths)
    typer.echo(f"model {result['model']}, {result['seconds']:.1f} s of measuring")
    typer.echo(search.format_leaderboard(result))
    winner = result["leaderboard"][0]
    values = search.winner_settings(winner)
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items() if v is not None)
    if save:
        path = search.save_settings(values)
        typer.echo(f"saved to {path}: {shown}")
    else:
        typer.echo(f"best: {shown} (run with --save to keep it)")


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command()(tune)
