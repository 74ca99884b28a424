"""``rmcli tune``: search layouts by successive halving and keep the fastest.

The candidates are cpu-pinned layouts, plus openvino at each thread count and precision
(fp32, and bf16 where the CPU has it natively) when onnxruntime-openvino is installed. A
candidate whose masks differ from fp32 on the CPU provider by more than ``mask_error_budget``
(mean over the images, 0-255 scale) is rejected before the timing starts.

The search runs in one fresh worker process (``python -m rmcli.tools.tune``). All candidate
sessions are built first; then each round times every surviving candidate on the same
images, interleaved image by image, so load from other processes hits all of them alike.
After each round the slower half (by median time per image over all its images so far) is
dropped, and the survivors get twice as many images, until one is left or the budget ends.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rmcli.errors import RmcliError, UsageError
from rmcli.tools.bench_worker import call, serve

FIRST_ROUND_IMAGES = 2


@dataclass
class Candidate:
    """One layout under test and its measured times per image (seconds)."""

    values: dict[str, Any]
    times: list[float] = field(default_factory=list)
    rounds: int = 0  # rounds it took part in
    session_seconds: float = 0.0
    mask_error: float = 0.0  # mean absolute difference from the fp32 CPU-provider masks

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else math.inf

    @property
    def label(self) -> str:
        v = self.values
        if v.get("backend", "cpu-pinned") != "cpu-pinned":
            return f"{v['backend']} {v.get('precision', 'fp32')}, {v['intra_threads']} threads"
        mode = "sequential"
        if v["execution_mode"] == "parallel":
            mode = f"parallel, inter {v['inter_threads']}"
        spin = "spin" if v["allow_spinning"] else "no spin"
        bound = f"bound {v['cpu_binding']}" if v["cpu_binding"] else "unbound"
        return f"intra {v['intra_threads']}, {mode}, {spin}, {bound}"


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    counts = {cores}
    n = 1
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


def candidates(
    cpus: Sequence[int], cores: int, openvino: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The search space: cpu-pinned with intra threads x (sequential | parallel with 2 inter)
    x spinning x (unbound | bound to the first allowed CPUs); then openvino with each thread
    count x each precision in ``openvino``. Layouts that would change nothing are left out:
    binding one thread (ORT never pins the calling thread), spinning with no pool, and
    parallel mode on one core.
    """
    space = []
    for intra in thread_counts(cores):
        modes = [("sequential", None)] + ([("parallel", 2)] if cores >= 2 else [])
        bindings = [""] + ([_cpu_list(cpus[:intra])] if intra > 1 else [])
        for mode, inter in modes:
            # one sequential thread has no pool to spin: spinning would change nothing
            spins = (False,) if intra == 1 and mode == "sequential" else (True, False)
            for spin in spins:
                for binding in bindings:
                    space.append(
                        {
                            "backend": "cpu-pinned",
                            "precision": "fp32",
                            "intra_threads": intra,
                            "execution_mode": mode,
                            "inter_threads": inter,
                            "allow_spinning": spin,
                            "cpu_binding": binding,
                        }
                    )
    for precision in openvino:
        for intra in thread_counts(cores):
            space.append(
                {
                    "backend": "openvino",
                    "precision": precision,
                    "intra_threads": intra,
                    # not openvino's to choose (it runs the model on its own threads)
                    "execution_mode": None,
                    "inter_threads": None,
                    "allow_spinning": None,
                    "cpu_binding": None,
                }
            )
    return space


def _cpu_list(cpus: Sequence[int]) -> str:
    cpus = sorted(cpus)
    if cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(str(c) for c in cpus)


def successive_halving(
    pool: list[Candidate],
    time_one: Callable[[Candidate, int], float],
    budget: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[Candidate]:
    """Run rounds until one candidate is left or the next round would overrun ``budget``.

    ``time_one(candidate, i)`` times the ``i``-th image of a round. Every candidate is timed
    at least once, so there is a winner even with a tiny budget; a round cut short by the
    budget still ranks its candidates on the images all of them got. Returns the
    leaderboard, best first: by rounds survived, then median time per image.
    """
    start = clock()
    survivors = list(pool)
    images = FIRST_ROUND_IMAGES
    while True:
        for i in range(images):
            for candidate in survivors:
                candidate.times.append(time_one(candidate, i))
            if clock() - start > budget:  # out of time mid-round: rank on what we have
                break
        for candidate in survivors:
            candidate.rounds += 1
        if len(survivors) == 1 or clock() - start > budget:
            break
        survivors.sort(key=lambda c: c.median)
        survivors = survivors[: math.ceil(len(survivors) / 2)]
        images *= 2
        per_image = statistics.median(t for c in survivors for t in c.times)
        if clock() - start + per_image * images * len(survivors) > budget:
            break
    return sorted(pool, key=lambda c: (-c.rounds, c.median))


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """In the worker: build every candidate session, then halve by measurement."""
    from rmcli.config.settings import Layer, resolve
    from rmcli.engine.layout import pin_calling_thread
    from rmcli.engine.remover import Remover
    from rmcli.images.imaging import load_image
    from rmcli.tools.bench_worker import session_defaults

    started = time.monotonic()
    flags = {"model": (request["model"], "tune --model")} if request["model"] else None
    # saved layouts must not leak into candidates
    base = session_defaults(resolve(flags, flags_layer=Layer.API))
    images = [load_image(path, path) for path in request["images"]]
    pool: list[Candidate] = []
    removers: dict[int, Remover] = {}
    for values in request["candidates"]:
        candidate = Candidate(values)
        settings = base.with_values("tune", **_settable(values))
        remover = Remover(settings=settings)
        candidate.session_seconds = remover.session.seconds_to_create
        remover.mask_of(images[0])  # warm-up
        removers[id(candidate)] = remover
        pool.append(candidate)
    rejected = within_error_budget(pool, removers, images, base["mask_error_budget"])
    pool = [c for c in pool if c not in rejected]

    # Like rmcli remove, a bound layout pins the thread that calls run() once sessions exist:
    # each bound candidate gets its own pinned calling thread, the main thread stays free.
    callers: dict[int, ThreadPoolExecutor] = {}
    for candidate in pool:
        if candidate.values["cpu_binding"]:
            remover = removers[id(candidate)]
            callers[id(candidate)] = caller = ThreadPoolExecutor(max_workers=1)
            caller.submit(pin_calling_thread, remover.layout).result()

    def timed(remover: Remover, image: Any) -> float:
        began = time.perf_counter()
        remover.mask_of(image)
        return time.perf_counter() - began

    def time_one(candidate: Candidate, i: int) -> float:
        remover, image = removers[id(candidate)], images[i % len(images)]
        caller = callers.get(id(candidate))
        return caller.submit(timed, remover, image).result() if caller else timed(remover, image)

    budget = request["budget"] - (time.monotonic() - started)
    try:
        board = successive_halving(pool, time_one, budget)
    finally:
        for caller in callers.values():
            caller.shutdown()
    return {
        "model": base["model"],
        "seconds": time.monotonic() - started,
        "leaderboard": [
            {
                "label": c.label,
                "values": c.values,
                "median_seconds": c.median,
                "images_timed": len(c.times),
                "rounds": c.rounds,
                "session_seconds": c.session_seconds,
                "mask_error": c.mask_error,
            }
            for c in board
        ],
        "mask_error_budget": base["mask_error_budget"],
        "rejected": [
            {"label": c.label, "values": c.values, "mask_error": c.mask_error} for c in rejected
        ],
    }


def _exact(values: Mapping[str, Any]) -> bool:
    return values.get("backend", "cpu-pinned") == "cpu-pinned" and values["precision"] == "fp32"


def within_error_budget(
    pool: list[Candidate], removers: Mapping[int, Any], images: Sequence[Any], budget: float
) -> list[Candidate]:
    """Measure each candidate's mask error against the fp32 CPU-provider masks (0 for the
    cpu-pinned fp32 candidates themselves); return the ones over ``budget``."""
    import numpy as np

    if all(_exact(c.values) for c in pool):
        return []
    exact = next((c for c in pool if _exact(c.values)), None)
    if exact is None:
        raise UsageError("tune needs a cpu-pinned fp32 candidate as the mask reference")
    remover = removers[id(exact)]
    reference = [np.asarray(remover.mask_of(image), dtype=np.int16) for image in images]
    rejected = []
    for candidate in pool:
        if _exact(candidate.values):
            continue
        remover = removers[id(candidate)]
        errors = [
            float(np.abs(np.asarray(remover.mask_of(image), dtype=np.int16) - ref).mean())
            for image, ref in zip(images, reference, strict=True)
        ]
        candidate.mask_error = sum(errors) / len(errors)
        if candidate.mask_error > budget:
            rejected.append(candidate)
    return rejected


def _settable(values: Mapping[str, Any]) -> dict[str, Any]:
    """Candidate values as settings (an unset inter_threads stays at its default)."""
    return {k: v for k, v in values.items() if v is not None}


def run_tune(model: str | None, budget: float, images: Sequence[Path]) -> dict[str, Any]:
    """Run the search in a fresh worker process and return its result."""
    from rmcli.cpus import allowed_cpus, usable_cpu_count

    if budget <= 0:
        raise UsageError("--budget must be a positive number of seconds")
    request = {
        "model": model,
        "budget": budget,
        "images": [str(p) for p in images],
        "candidates": candidates(allowed_cpus(), usable_cpu_count(), openvino_precisions()),
    }
    result = call("rmcli.tools.tune", request)
    if "error" in result:
        raise RmcliError(f"tune failed: {result['error']}")
    return result


def openvino_precisions() -> list[str]:
    """The precisions openvino can run here: [] without it, fp32, and bf16 where native."""
    from rmcli.tools.bench import openvino_configurations

    return [c.values["precision"] for c in openvino_configurations({})]


def winner_settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings to save for a leaderboard entry: None means remove the key from the file."""
    values = dict(entry["values"])
    return {
        "backend": values.get("backend", "cpu-pinned"),
        "precision": values.get("precision", "fp32"),
        "intra_threads": values["intra_threads"],
        "execution_mode": values["execution_mode"],
        "inter_threads": values["inter_threads"],
        "allow_spinning": values["allow_spinning"],
        "cpu_binding": values["cpu_binding"],
    }


def save_settings(values: Mapping[str, Any]) -> Path:
    """Write ``values`` into the user config file (None removes a key); returns its path."""
    from rmcli.config.file import config_path, update_config

    def change(data: dict[str, Any]) -> None:
        for key, value in values.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    path = config_path()
    update_config(path, change)  # locked and atomic; a broken file raises and is left alone
    return path


def format_leaderboard(result: Mapping[str, Any]) -> str:
    """The leaderboard as aligned text, best first."""
    board = result["leaderboard"]
    best_rounds = board[0]["rounds"] if board else 0
    lines = [f"{'#':>2}  {'median ms':>9}  {'images':>6}  {'rounds':>6}  {'mask err':>8}  layout"]
    for rank, entry in enumerate(board, 1):
        mark = "" if entry["rounds"] == best_rounds else "  (dropped)"
        lines.append(
            f"{rank:>2}  {1000 * entry['median_seconds']:>9.1f}  {entry['images_timed']:>6}  "
            f"{entry['rounds']:>6}  {entry.get('mask_error', 0.0):>8.2f}  {entry['label']}{mark}"
        )
    budget = result.get("mask_error_budget")
    for entry in result.get("rejected", []):
        lines.append(
            f"{'-':>2}  {'':>9}  {'':>6}  {'':>6}  {entry['mask_error']:>8.2f}  "
            f"{entry['label']}  (rejected: mask error over the budget {budget:g})"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(serve(measure))
