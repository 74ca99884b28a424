"""Measure one configuration in this (fresh) process: ``python -m rmcli.tools.bench_worker``.

Reads a JSON request on stdin, writes one JSON object on stdout: the measurements, or
``{"error": "..."}`` (exit code 2) when the configuration cannot run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from rmcli.config.settings import SETTINGS, Layer, Settings, Value, resolve
from rmcli.errors import RmcliError

# what "defaults": true resets (the thread layout); model, weights, device stay as resolved
LAYOUT_KEYS = (
    "intra_threads",
    "inter_threads",
    "cpu_binding",
    "execution_mode",
    "allow_spinning",
    "graph_optimization",
    "shared_threadpool",
    "precision",
)


def settings_for(request: dict[str, Any]) -> Settings:
    """Flags from the request over env and config file; ``defaults`` drops saved session values."""
    flags: dict[str, Any] = {k: (v, "bench --set") for k, v in request.get("values", {}).items()}
    if request.get("backend"):
        flags["backend"] = (request["backend"], "bench --backend")
    settings = resolve(flags)
    if request.get("defaults"):
        settings = session_defaults(settings, keep=set(flags))
    return settings


def session_defaults(settings: Settings, keep: set[str] = frozenset()) -> Settings:
    """``settings`` with the thread layout (but the keys in ``keep``) back at its defaults."""
    values = dict(settings.values)
    for key in LAYOUT_KEYS:
        if key in SETTINGS and key not in keep:
            values[key] = Value(SETTINGS[key].default, "default", Layer.DEFAULT)
    return Settings(values, settings.plugins)


def variant_settings(settings: Settings, kind: str, folder: str) -> Settings:
    """``settings`` pointed at a ``kind`` copy of their model, written into ``folder``."""
    from pathlib import Path

    from rmcli.engine.families import FAMILIES
    from rmcli.engine.remover import model_for
    from rmcli.engine.session import store_for
    from rmcli.tools.variants import make_variant

    model = model_for(settings)
    if model.family not in FAMILIES:
        raise RmcliError(f"{model.name}: variants are made for u2net, isnet and birefnet models")
    source = store_for(settings).ensure(model.weights, model_name=model.name)
    path = make_variant(kind, Path(source), Path(folder))
    return settings.with_values("bench --variants", model_path=str(path), model_family=model.family)


def thread_count() -> int:
    """Threads in this process (``/proc/self/task``); 0 when unknown."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Build the session, warm up, then time ``runs`` passes over the images."""
    from rmcli.engine.layout import pin_calling_thread
    from rmcli.engine.remover import Remover

    settings = settings_for(request)
    if request.get("variant"):
        settings = variant_settings(settings, request["variant"], request["variant_dir"])
    remover = Remover(settings=settings)
    session = remover.session
    caller_cpus = pin_calling_thread(session.layout)  # as rmcli remove does
    images = [remover.load(path) for path in request["images"]]
    for image in images[: max(0, request.get("warmup", 1))]:
        remover.mask_of(image)
    remover.reset_stats()
    wall, cpu = time.perf_counter(), time.process_time()
    masks = []
    for run in range(request["runs"]):
        for image in images:
            mask = remover.mask_of(image)
            if run == 0:
                masks.append(mask)
    cpu = time.process_time() - cpu  # read before the wall clock: wall time encloses CPU time
    wall = time.perf_counter() - wall
    stats = remover.stats()
    cores = session.layout.usable_cpus
    cpu_cores = cpu / wall if wall > 0 else 0.0
    options = session.plan.options
    if request.get("masks_path"):  # for the mask error against the reference configuration
        import numpy as np

        np.savez(request["masks_path"], **{str(i): np.asarray(m) for i, m in enumerate(masks)})
    return {
        "backend": remover.backend.name,
        "model": remover.model.name,
        "session_seconds": session.seconds_to_create,
        "images_timed": stats.count,
        "median_seconds": stats.median_seconds,
        "p90_seconds": stats.p90_seconds,
        "images_per_second": stats.count / wall if wall > 0 else 0.0,
        "cpu_cores_used": cpu_cores,
        "cpu_percent_of_allowed": 100 * cpu_cores / cores,
        "allowed_cores": cores,
        "peak_rss_mb": peak_rss_mb(),
        "threads": thread_count(),
        "providers": session.active_providers,
        "precision": settings["precision"],
        # the session's layout (the object -v and the pin read); 0: ONNX Runtime's default
        "intra_threads": session.layout.intra_threads or options.intra_op_num_threads,
        "inter_threads": session.layout.inter_threads or options.inter_op_num_threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "caller_cpus": caller_cpus,
        "settings": {
            key: {"value": settings[key], "source": settings.source(key)}
            for key, setting in SETTINGS.items()
            if setting.session
        },
    }


def serve(measure: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """A worker's main: JSON request on stdin, ``measure``'s result (or its error) on stdout."""
    request = json.load(sys.stdin)
    try:
        result = measure(request)
    except RmcliError as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return exc.exit_code
    json.dump(result, sys.stdout)
    return 0


def call(
    module: str,
    request: dict[str, Any],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict:
    """Run ``python -m module`` in a fresh process; its result, or ``{"error": reason}``
    (also when it runs past ``timeout`` seconds: it is killed)."""
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-m", module],  # -P: the working folder is not on the path
            input=json.dumps(request),
            capture_output=True,
            text=True,
            env=dict(os.environ if env is None else env),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.1f} s, the time it was given"}
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or "error" in result or not result:
        stderr = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = result.get("error") or (stderr[-1] if stderr else f"exit code {done.returncode}")
        return {"error": reason}
    return result


if __name__ == "__main__":
    sys.exit(serve(measure))
