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
    in the config file or environment (built-in defaults instead).
    """

    label: str
    backend: str
    values: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)
    defaults: bool = False


@dataclass
class Row:
    """A configuration and what was measured (or the error that stopped it)."""

    configuration: Configuration
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "label": self.configuration.label,
            "backend": self.configuration.backend,
            "values": dict(self.configuration.values),
            "env": dict(self.configuration.env),
        }
        if self.error:
            data["error"] = self.error
        data.update(self.result)
        return data


def default_configurations(
    cores: int, sets: Mapping[str, str], saved: bool = True
) -> list[Configuration]:
    """The seed's table: legacy openmp-env twice, then cpu-pinned defaults and (when some
    layout setting is saved in the environment or config file) the saved settings; then
    openvino at fp32 and bf16 where they can run."""
    rows = [
        Configuration("openmp-env, ORT defaults", "openmp-env", sets, {"OMP_NUM_THREADS": None}),
        Configuration(
            f"openmp-env, OMP_NUM_THREADS={cores}",
            "openmp-env",
            sets,
            {"OMP_NUM_THREADS": str(cores)},
        ),
        Configuration("cpu-pinned, defaults", "cpu-pinned", sets, {}, defaults=True),
    ]
    if saved:
        rows.append(Configuration("cpu-pinned, saved settings", "cpu-pinned", sets, {}))
    return rows + openvino_configurations(sets)


def layout_saved() -> bool:
    """True when the environment or the config file sets a thread-layout setting."""
    from rmcli.config.settings import resolve
    from rmcli.tools.bench_worker import LAYOUT_KEYS

    settings = resolve()
    return any(settings.given(key) for key in LAYOUT_KEYS)


def openvino_configurations(sets: Mapping[str, str]) -> list[Configuration]:
    """openvino at fp32, and at bf16 where the CPU has it natively; none when unavailable."""
    from rmcli.builtins.openvino import native_bf16_problem
    from rmcli.engine.registry import backends

    backend = backends().get("openvino")
    if backend is None or not backend.availability()[0]:
        return []
    rows = [Configuration("openvino, fp32", "openvino", {**sets, "precision": "fp32"})]
    if native_bf16_problem() is None:
        rows.append(Configuration("openvino, bf16", "openvino", {**sets, "precision": "bf16"}))
    return rows


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
            if progress:
                progress(f"measuring {configuration.label} ...")
            masks[i] = Path(tmp) / f"masks-{i}.npz"
            rows.append(run_configuration(configuration, images, runs, masks_path=masks[i]))
        mask_errors(rows, masks)
    base = next((r.result["median_seconds"] for r in rows if not r.error), None)
    for row in rows:
        if not row.error and base:
            row.result["speedup_vs_first"] = base / row.result["median_seconds"]
    return rows


def is_reference(row: Row) -> bool:
    """Whether a row ran at fp32 on ONNX Runtime's CPU provider alone: the mask reference."""
    result = row.result
    return (
        not row.error
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
        if row.error or not masks[i].exists():
            continue
        with np.load(masks[i]) as data:
            ours = [data[name].astype(np.int16) for name in sorted(data.files, key=int)]
        errors = [float(np.abs(a - b).mean()) for a, b in zip(ours, ref, strict=True)]
        row.result["mask_reference"] = label
        row.result["mask_errors"] = errors
        row.result["mask_error_mean"] = sum(errors) / len(errors)
        row.result["mask_error_worst"] = max(errors)


COLUMNS = [
    ("configuration", lambda r: r["label"]),
    (
        "threads intra/inter",
        lambda r: f"{_threads(r['intra_threads'])}/{_threads(r['inter_threads'])}",
    ),
    ("session s", lambda r: f"{r['session_seconds']:.3f}"),
    ("median ms", lambda r: f"{1000 * r['median_seconds']:.1f}"),
    ("p90 ms", lambda r: f"{1000 * r['p90_seconds']:.1f}"),
    ("images/s", lambda r: f"{r['images_per_second']:.2f}"),
    ("CPU cores", lambda r: f"{r['cpu_cores_used']:.2f}"),
    ("CPU % allowed", lambda r: f"{r['cpu_percent_of_allowed']:.0f}%"),
    ("peak RSS MiB", lambda r: f"{r['peak_rss_mb']:.0f}"),
    ("threads", lambda r: str(r["threads"])),
    ("providers", lambda r: ",".join(p.removesuffix("ExecutionProvider") for p in r["providers"])),
    ("precision", lambda r: r.get("precision", "fp32")),
    ("mask err mean/worst", lambda r: _mask_error(r)),
    ("vs first", lambda r: f"{r['speedup_vs_first']:.2f}x"),
]


def _mask_error(r: Mapping[str, Any]) -> str:
    if "mask_error_mean" not in r:
        return "-"
    return f"{r['mask_error_mean']:.2f}/{r['mask_error_worst']:.2f}"


def _threads(value: int) -> str:
    return "default" if value == 0 else str(value)


def table_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the table; a failed configuration shows its error."""
    header = [name for name, _ in COLUMNS]
    cells = []
    for row in rows:
        data = row.as_dict()
        if row.error:
            cells.append([data["label"], f"failed: {row.error}"] + [""] * (len(COLUMNS) - 2))
        else:
            cells.append([cell(data) for _, cell in COLUMNS])
    return header, cells


def format_text(rows: Sequence[Row]) -> str:
    """An aligned plain-text table."""
    header, cells = table_cells(rows)
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    ]
    return "\n".join(lines)


def format_markdown(rows: Sequence[Row]) -> str:
    """A Markdown table (for docs and issues)."""
    header, cells = table_cells(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
    return "\n".join(lines)


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
