"""``rmcli bench``: the configuration table for this machine and model."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from rmcli.errors import EXIT_INPUT_FAILED, UsageError

ModelOption = Annotated[
    str | None,
    typer.Option("-m", "--model", metavar="NAME", help="Model to measure (default: setting)."),
]
ModelPathOption = Annotated[
    str | None,
    typer.Option("--model-path", metavar="FILE", help="Custom ONNX weights (with --model-family)."),
]
FamilyOption = Annotated[
    str | None,
    typer.Option("--model-family", metavar="FAMILY", help="u2net, isnet or birefnet."),
]


def model_values(model: str | None, model_path: str | None, family: str | None) -> dict[str, str]:
    """The model flags given, as setting values."""
    given = {"model": model, "model_path": model_path, "model_family": family}
    return {key: value for key, value in given.items() if value}


def bench(
    images: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE",
            help="Image files, folders or globs. Default: 3 sample photos shipped with rmcli.",
        ),
    ] = None,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    model_family: FamilyOption = None,
    backends: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            metavar="NAME",
            help="Measure this backend (repeatable). Default: the built-in comparison set.",
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="A setting for every configuration (repeatable)."
        ),
    ] = None,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants", help="Also fp16-weight and quantized copies of the model (cpu-pinned)."
        ),
    ] = False,
    runs: Annotated[int, typer.Option("-n", "--runs", help="Timed passes over the images.")] = 3,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column (the default table fits 100 columns).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown table.")] = False,
) -> None:
    """Measure configurations, each in a fresh process: warm-up, then RUNS timed passes.

    Without --backend: openmp-env (rembg's session options) with ONNX Runtime's defaults and
    with OMP_NUM_THREADS, cpu-pinned with built-in defaults and with your saved layout (e.g.
    from `rmcli tune --save`), openvino at fp32 and bf16; a row that cannot run here says
    why. The last line recommends the command to run. See docs/tuning.md for the columns.

    Examples:

      rmcli bench                          # the bundled photos, 3 passes

      rmcli bench photos/ -m isnet-general-use --variants

      rmcli bench a.jpg --backend cpu-pinned --set intra_threads=1 --wide
    """
    from rmcli.config.settings import resolve
    from rmcli.cpus import usable_cpu_count
    from rmcli.tools import bench as core

    if as_json and markdown:
        raise UsageError("--json and --markdown exclude each other")
    if runs < 1:
        raise UsageError("-n must be at least 1")
    values = {**core.parse_sets(sets or []), **model_values(model, model_path, model_family)}
    core.parse_sets([f"{k}={v}" for k, v in values.items()])  # a bad model flag fails here
    paths = core.find_images(images or [])
    if backends:
        from rmcli.engine.registry import get_backend

        for name in backends:
            get_backend(name)  # an unknown name fails here, with the known ones listed
        configurations = core.backend_configurations(backends, values)
        configurations += core.variant_configurations(values) if variants else []
    else:
        configurations = core.default_configurations(
            usable_cpu_count(), values, core.why_no_saved_layout(values), variants
        )

    def progress(line: str) -> None:
        print(f"rmcli: {line}", file=sys.stderr, flush=True)

    settings = resolve(core.model_flags(values))
    rows = core.bench(configurations, paths, runs, progress)
    advice = core.recommendation(rows, values, settings["mask_error_budget"])
    if as_json:
        data = core.report(rows, paths, runs)
        data["recommendation"] = advice.removeprefix("recommendation: ")
        typer.echo(json.dumps(data, indent=2))
    elif markdown:
        typer.echo(core.format_markdown(rows, wide=True) + "\n")  # the advice: a paragraph
    else:
        name = next((r.result["model"] for r in rows if r.measured), settings["model"])
        typer.echo(f"model {name}, {len(paths)} images x {runs} passes, mask err: mean/worst")
        typer.echo(core.format_text(rows, wide=wide))
    if not as_json:
        typer.echo(advice)
    failed = [row for row in rows if row.error]
    for row in failed:
        print(f"rmcli: {row.configuration.label}: {row.error}", file=sys.stderr)
    if failed:
        raise typer.Exit(EXIT_INPUT_FAILED)


def tune(
    images: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE",
            help="Images to measure on. Default: 3 sample photos shipped with rmcli.",
        ),
    ] = None,
    model: ModelOption = None,
    model_path: ModelPathOption = None,
    model_family: FamilyOption = None,
    budget: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Time for the whole command, never overrun."),
    ] = 60.0,
    save: Annotated[
        bool,
        typer.Option("--save", help="Store the winning layout for this model in the config file."),
    ] = False,
) -> None:
    """Find the fastest layout for a model on this machine, within the mask error budget.

    Searches cpu-pinned's intra threads, execution mode and inter threads, spinning and core
    binding; with onnxruntime-openvino also openvino's threads and precision. All candidates
    run interleaved in one fresh process (successive halving); then the top two and the
    default layout are timed again until the leader beats the others by more than the noise
    measured. Without a clear winner the default layout is kept. --save stores the result as
    the model's [layout.<model>] table: runs with that model use it (the "tuned" source of
    `rmcli remove -v` and `rmcli config list --sources`); flags and RMCLI_* still win.

    Examples:

      rmcli tune                              # the default model, up to 60 s

      rmcli tune -m isnet-general-use --budget 300 --save

      rmcli tune --model-path isnet.onnx --model-family isnet --save
    """
    import time

    from rmcli.tools import bench as core
    from rmcli.tools import tune as search

    started = time.time()
    flags = model_values(model, model_path, model_family)
    core.parse_sets([f"{k}={v}" for k, v in flags.items()])  # a bad model flag fails here
    paths = core.find_images(images or [])
    print(f"rmcli: tuning for up to {budget:g} s ...", file=sys.stderr, flush=True)
    result = search.run_tune(flags, budget, paths, started)
    typer.echo(f"model {result['model']}, {result['seconds']:.1f} s of measuring")
    typer.echo(search.format_leaderboard(result))
    typer.echo(search.format_verdict(result))
    values = search.winner_settings(result["winner"])
    shown = ", ".join(f"{k} = {v!r}" for k, v in values.items() if v is not None)
    name = result["layout_name"]
    if save:
        path = search.save_layout(name, values)
        typer.echo(f"saved as [layout.{name}] in {path}: {shown}")
    else:
        typer.echo(f"best: {shown} (run with --save to keep it for {name})")


def register(app: typer.Typer) -> None:
    app.command()(bench)
    app.command()(tune)
