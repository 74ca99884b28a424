"""``rmcli bench``: measure configurations, each in a fresh process, and tabulate them."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmcli.errors import UsageError
from rmcli.tools.bench_worker import call

SAMPLES = Path(__file__).resolve().parent.parent / "samples"  # package data: 3 small photos


@dataclass(frozen=True)
class Configuration:
    """One row of the table: a backend, setting values, and environment changes.

    ``env`` values of None remove the variable; ``defaults`` ignores session settings saved
    in the config file or environment (built-in defaults instead); ``variant`` runs a
    converted copy of the model (see :mod:`rmcli.tools.variants`); ``absent`` says why the
    row cannot be measured here (it is shown, not run).
    """

    label: str
    backend: str
    values: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)
    defaults: bool = False
    variant: str | None = None
    absent: str | None = None


@dataclass
class Row:
    """A configuration and what was measured (or the error that stopped it)."""

    configuration: Configuration
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def measured(self) -> bool:
        return not self.error and not self.configuration.absent

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "label": self.configuration.label,
            "backend": self.configuration.backend,
            "values": dict(self.configuration.values),
            "env": dict(self.configuration.env),
        }
        if self.configuration.variant:
            data["variant"] = self.configuration.variant
        if self.configuration.absent:
            data["absent"] = self.configuration.absent
        if self.error:
            data["error"] = self.error
        data.update(self.result)
        return data


def default_configurations(
    cores: int, sets: Mapping[str, str], saved: str | None = None, variants: bool = False
) -> list[Configuration]:
    """The comparison set: openmp-env (rembg's session options) with ORT's defaults and with
    ``OMP_NUM_THREADS``, cpu-pinned with built-in defaults and with the saved layout, openvino
    at fp32 and bf16, and (``variants``) cpu-pinned on fp16-weight and quantized copies of the
    model. Rows that cannot run here are kept, with the reason (``saved``: why there is no
    saved layout, None when there is one)."""
    rows = [
        Configuration("openmp-env, ORT defaults", "openmp-env", sets, {"OMP_NUM_THREADS": None}),
        Configuration(
            f"openmp-env, OMP_NUM_THREADS={cores}",
            "openmp-env",
            sets,
            {"OMP_NUM_THREADS": str(cores)},
        ),
        Configuration("cpu-pinned, defaults", "cpu-pinned", sets, {}, defaults=True),
        Configuration("cpu-pinned, saved settings", "cpu-pinned", sets, {}, absent=saved),
        *openvino_configurations(sets),
    ]
    return rows + (variant_configurations(sets) if variants else [])


def variant_configurations(sets: Mapping[str, str]) -> list[Configuration]:
    """cpu-pinned with built-in defaults on each variant of the model's weights."""
    from rmcli.tools.variants import VARIANTS

    return [
        Configuration(f"cpu-pinned, {label}", "cpu-pinned", sets, defaults=True, variant=kind)
        for kind, label in VARIANTS.items()
    ]


def model_flags(sets: Mapping[str, str]) -> dict[str, Any]:
    """The model settings among ``sets`` as flags for :func:`resolve`."""
    keys = ("model", "model_path", "model_family")
    return {k: (sets[k], f"bench --{k.replace('_', '-')}") for k in keys if sets.get(k)}


def why_no_saved_layout(sets: Mapping[str, str]) -> str | None:
    """None when the environment, the config file or the model's tuned layout sets a
    thread-layout setting; else the reason the saved-settings row is not measured."""
    from rmcli.config.settings import resolve
    from rmcli.tools.bench_worker import LAYOUT_KEYS

    settings = resolve(model_flags(sets))
    if any(settings.given(key) for key in LAYOUT_KEYS):
        return None
    return "no layout saved for this model (`rmcli tune --save` stores one)"


def openvino_configurations(sets: Mapping[str, str]) -> list[Configuration]:
    """openvino at fp32 and bf16; a row that cannot run here carries the reason."""
    from rmcli.engine.registry import backends

    fp32 = {**sets, "precision": "fp32"}
    bf16 = {**sets, "precision": "bf16"}
    backend = backends().get("openvino")
    if backend is None:
        absent = "the openvino backend is not registered"
    else:
        ok, reason = backend.availability()
        absent = None if ok else reason
    bf16_absent = absent
    if absent is None:
        from rmcli.builtins.openvino import native_bf16_problem

        bf16_absent = native_bf16_problem()
    return [
        Configuration("openvino, fp32", "openvino", fp32, absent=absent),
        Configuration("openvino, bf16", "openvino", bf16, absent=bf16_absent),
    ]


def backend_configurations(names: Sequence[str], sets: Mapping[str, str]) -> list[Configuration]:
    """One configuration per ``--backend``, with env, config file and ``--set`` values."""
    return [Configuration(name, name, sets) for name in names]


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs into a dict; keys are checked against the settings table."""
    from rmcli.config.settings import resolve

    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--set {pair!r} is not KEY=VALUE")
        values[key] = value
    resolve({k: (v, f"--set {k}") for k, v in values.items()})  # a bad key or value fails here
    return values


def find_images(args: Sequence[str]) -> list[Path]:
    """Image files named by ``args`` (files, folders, globs); the bundled samples if none."""
    from rmcli.images.inputs import expand

    if not args:
        args = [str(SAMPLES)]
    images = []
    for label, path, _root in expand(list(args)):
        if path is None:
            raise UsageError("bench cannot read standard input; name image files")
        if not path.is_file():
            raise UsageError(f"{label}: no such file")
        images.append(path)
    if not images:
        raise UsageError("no input images found")
    return images


def run_configuration(
    configuration: Configuration,
    images: Sequence[Path],
    runs: int,
    warmup: int = 1,
    masks_path: Path | None = None,
    variant_dir: Path | None = None,
) -> Row:
    """Measure one configuration in a fresh ``python -m rmcli.tools.bench_worker`` process."""
    env = dict(os.environ)
    for name, value in configuration.env.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    request = {
        "backend": configuration.backend,
        "values": dict(configuration.values),
        "defaults": configuration.defaults,
        "images": [str(p) for p in images],
        "runs": runs,
        "warmup": warmup,
        "masks_path": str(masks_path) if masks_path else None,
        "variant": configuration.variant,
        "variant_dir": str(variant_dir) if variant_dir else None,
    }
    result = call("rmcli.tools.bench_worker", request, env)
    if "error" in result:
        return Row(configuration, error=result["error"])
    return Row(configuration, result)


def bench(
    configurations: Sequence[Configuration],
    images: Sequence[Path],
    runs: int,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Measure every configuration in turn; speed-ups are against the first one measured."""
    if runs < 1:
        raise UsageError("-n must be at least 1")
    import tempfile

    rows = []
    masks: dict[int, Path] = {}
    with tempfile.TemporaryDirectory(prefix="rmcli-bench-") as tmp:
        for i, configuration in enumerate(configurations):
            masks[i] = Path(tmp) / f"masks-{i}.npz"
            if configuration.absent:
                rows.append(Row(configuration))
                continue
            if progress:
                progress(f"measuring {configuration.label} ...")
            rows.append(
                run_configuration(
                    configuration, images, runs, masks_path=masks[i], variant_dir=Path(tmp)
                )
            )
        mask_errors(rows, masks)
    base = next((r.result["median_seconds"] for r in rows if r.measured), None)
    for row in rows:
        if row.measured and base:
            row.result["speedup_vs_first"] = base / row.result["median_seconds"]
    return rows


def is_reference(row: Row) -> bool:
    """Whether a row ran at fp32 on ONNX Runtime's CPU provider alone: the mask reference."""
    result = row.result
    return (
        row.measured
        and not row.configuration.variant
        and result.get("providers") == ["CPUExecutionProvider"]
        and result.get("precision", "fp32") == "fp32"
    )


def mask_errors(rows: Sequence[Row], masks: Mapping[int, Path]) -> None:
    """Add ``mask_error_mean``/``mask_error_worst`` (0-255 scale, mean absolute difference per
    image, at full resolution) against the first fp32 CPU-provider row, ``mask_reference``."""
    import numpy as np

    reference = next((i for i, row in enumerate(rows) if is_reference(row)), None)
    if reference is None or not masks[reference].exists():
        return
    with np.load(masks[reference]) as data:
        ref = [data[name].astype(np.int16) for name in sorted(data.files, key=int)]
    label = rows[reference].configuration.label
    for i, row in enumerate(rows):
        if not row.measured or not masks[i].exists():
            continue
        with np.load(masks[i]) as data:
            ours = [data[name].astype(np.int16) for name in sorted(data.files, key=int)]
        errors = [float(np.abs(a - b).mean()) for a, b in zip(ours, ref, strict=True)]
        row.result["mask_reference"] = label
        row.result["mask_errors"] = errors
        row.result["mask_error_mean"] = sum(errors) / len(errors)
        row.result["mask_error_worst"] = max(errors)


# (header, cell, in the narrow table): the narrow one fits 100 columns, --wide has them all
COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str], bool]] = [
    ("configuration", lambda r: r["label"], True),
    (
        "threads",  # intra/inter
        lambda r: f"{_threads(r['intra_threads'])}/{_threads(r['inter_threads'])}",
        True,
    ),
    ("session s", lambda r: f"{r['session_seconds']:.3f}", False),
    ("median ms", lambda r: f"{1000 * r['median_seconds']:.1f}", True),
    ("p90 ms", lambda r: f"{1000 * r['p90_seconds']:.1f}", False),
    ("img/s", lambda r: f"{r['images_per_second']:.2f}", True),
    ("CPU cores", lambda r: f"{r['cpu_cores_used']:.2f}", False),
    ("CPU %", lambda r: f"{r['cpu_percent_of_allowed']:.0f}%", True),
    ("RSS MiB", lambda r: f"{r['peak_rss_mb']:.0f}", True),
    ("threads run", lambda r: str(r["threads"]), False),
    (
        "providers",
        lambda r: ",".join(p.removesuffix("ExecutionProvider") for p in r["providers"]),
        False,
    ),
    ("precision", lambda r: r.get("precision", "fp32"), False),
    ("mask err", lambda r: _mask_error(r), True),
    ("vs first", lambda r: f"{r['speedup_vs_first']:.2f}x", True),
]
NARROW = 100  # characters: the default table fits a 100-column terminal


def _mask_error(r: Mapping[str, Any]) -> str:
    if "mask_error_mean" not in r:
        return "-"
    return f"{r['mask_error_mean']:.2f}/{r['mask_error_worst']:.2f}"


def _threads(value: int) -> str:
    return "ORT" if value == 0 else str(value)


def columns(wide: bool) -> list[tuple[str, Callable[[Mapping[str, Any]], str]]]:
    return [(name, cell) for name, cell, narrow in COLUMNS if wide or narrow]


def table_cells(rows: Sequence[Row], wide: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells; a row not measured has its reason in the second cell."""
    chosen = columns(wide)
    header = [name for name, _ in chosen]
    cells = []
    for row in rows:
        data = row.as_dict()
        if row.measured:
            cells.append([cell(data) for _, cell in chosen])
        else:
            why = f"failed: {row.error}" if row.error else f"absent: {row.configuration.absent}"
            cells.append([data["label"], why] + [""] * (len(chosen) - 2))
    return header, cells


def format_text(rows: Sequence[Row], wide: bool = False) -> str:
    """An aligned plain-text table; without ``wide`` it has the main columns and fits 100
    characters (a row that was not measured wraps its reason under the columns)."""
    import textwrap

    header, cells = table_cells(rows, wide)
    measured = [line for line, row in zip(cells, rows, strict=True) if row.measured]
    widths = [max(len(line[i]) for line in [header, *measured]) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(line[0]) for line in cells))
    lines = []
    for line, row in zip([header, *cells], [None, *rows], strict=True):
        if row is None or row.measured:
            lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
            continue
        indent = " " * (widths[0] + 2)
        width = max(NARROW, sum(widths) + 2 * len(widths)) if wide else NARROW
        wrapped = textwrap.wrap(line[1], width - len(indent)) or [""]
        lines.append(line[0].ljust(widths[0]) + "  " + wrapped[0])
        lines += [indent + more for more in wrapped[1:]]
    return "\n".join(lines)


def format_markdown(rows: Sequence[Row], wide: bool = True) -> str:
    """A Markdown table (for docs and issues), all columns unless ``wide`` is False."""
    header, cells = table_cells(rows, wide)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
    return "\n".join(lines)


NOISE = 0.05  # a row must beat the defaults by more than this share to be recommended


def recommendation(rows: Sequence[Row], sets: Mapping[str, str], error_budget: float) -> str:
    """One line: the command to run, from the fastest row whose masks are within
    ``error_budget`` of the reference; rmcli's defaults unless a row beats them by > 5%."""
    ok = [
        r
        for r in rows
        if r.measured
        and not r.configuration.variant
        and r.result.get("mask_error_mean", 0.0) <= error_budget
    ]
    if not ok:
        return "recommendation: none (no configuration was measured)"
    best = min(ok, key=lambda r: r.result["median_seconds"])
    default = next((r for r in ok if r.configuration.label == "cpu-pinned, defaults"), None)
    note = ""
    if default and best is not default:
        gain = default.result["median_seconds"] / best.result["median_seconds"] - 1
        if gain <= NOISE:
            best, note = default, f" (nothing beat it by more than {NOISE:.0%})"
        else:
            note = f" ({gain + 1:.2f}x rmcli's defaults in this run)"
    if best.configuration.label == "cpu-pinned, saved settings":
        note += "; your saved layout applies by itself"
    return f"recommendation: {command_for(best.configuration, sets)}{note}"


def command_for(configuration: Configuration, sets: Mapping[str, str]) -> str:
    """The ``rmcli remove`` command line that runs ``configuration``."""
    import shlex

    words = ["rmcli", "remove", "IMAGES", "-o", "OUT"]
    env = [f"{k}={v}" for k, v in configuration.env.items() if v is not None]
    values = dict(sets if configuration.defaults else configuration.values)
    if configuration.backend != "cpu-pinned":
        words += ["-b", configuration.backend]
    for key, value in values.items():
        if key == "precision" and value == "fp32":
            continue
        words += [f"--{key.replace('_', '-')}", value]
    return " ".join(env + [shlex.quote(w) for w in words])


def report(rows: Sequence[Row], images: Sequence[Path], runs: int) -> dict[str, Any]:
    """The JSON document: machine facts, what was measured, one object per configuration."""
    import platform

    from rmcli.cpus import allowed_cpus, usable_cpu_count

    return {
        "machine": {
            "allowed_cpus": allowed_cpus(),
            "usable_cores": usable_cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "images": [str(p) for p in images],
        "runs": runs,
        "configurations": [row.as_dict() for row in rows],
    }
