"""``rmcli tune``: search layouts by successive halving and keep the fastest.

The candidates are cpu-pinned layouts, plus openvino at each thread count and precision
(fp32, and bf16 where the CPU has it natively) when onnxruntime-openvino is installed. A
candidate whose masks differ from fp32 on the CPU provider by more than ``mask_error_budget``
(mean over the images, 0-255 scale) is rejected before the timing starts.

The search runs in one fresh worker process (``python -m rmcli.tools.tune``). All candidate
sessions are built first; then each round times every surviving candidate on the same
images, interleaved image by image, so load from other processes hits all of them alike.
After each round the slower half (by median time per image over all its images so far) is
dropped, and the survivors get twice as many images, for up to 60% of the budget. Then the
leader, the runner-up and the default layout are timed again, interleaved, until the leader
beats each of the others by more than the noise measured (the paired time ratios' 95%
interval, by Student's t, excludes 1), or the budget ends: then the winner is the default layout.

The budget covers the whole command: sessions are only built, and images only timed, while
the time measured so far says they fit before the deadline.
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
BUILD_SHARE = 0.4  # of the budget: building candidate sessions (the rest measures)
HALVING_SHARE = 0.6  # of the budget left after building sessions; the rest confirms
MIN_PAIRS = 3  # paired timings before a difference can count as outside the noise
# the noise: Student's t (two-sided 95%) standard errors of the mean log time ratio, by
# degrees of freedom (pairs - 1); a few pairs say little about the spread, so t is large
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
T95_MANY = {10: 2.23, 15: 2.13, 20: 2.09, 30: 2.04, 60: 2.00, 120: 1.98}  # at least this many


def t95(freedom: int) -> float:
    """Student's t quantile for a two-sided 95% interval (rounded down to the table's rows)."""
    if freedom in T95:
        return T95[freedom]
    return next((t for d, t in sorted(T95_MANY.items(), reverse=True) if freedom >= d), 1.96)


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
    """Run rounds until one candidate is left or the next image would overrun ``budget``.

    ``time_one(candidate, i)`` times the ``i``-th image of a round. An image is only timed
    when the slowest time seen so far still fits the budget (the first image of the first
    round always is, so there is a winner); a round cut short ranks its candidates on what
    they got. Returns the leaderboard, best first: by rounds survived, then median time.
    """
    start = clock()
    survivors = list(pool)
    images = FIRST_ROUND_IMAGES
    slowest = 0.0
    while True:
        for i in range(images):
            for candidate in survivors:
                if slowest and clock() - start + slowest > budget:
                    break
                candidate.times.append(time_one(candidate, i))
                slowest = max(slowest, candidate.times[-1])
            else:
                continue
            break
        survivors = [c for c in survivors if c.times]
        for candidate in survivors:
            candidate.rounds += 1
        if len(survivors) <= 1 or clock() - start > budget:
            break
        survivors.sort(key=lambda c: c.median)
        survivors = survivors[: math.ceil(len(survivors) / 2)]
        images *= 2
        per_image = statistics.median(t for c in survivors for t in c.times)
        if clock() - start + per_image * images * len(survivors) > budget:
            break
    return sorted(pool, key=lambda c: (-c.rounds, c.median))


@dataclass
class Verdict:
    """The confirmation's outcome: ``winner`` (the default when ``confirmed`` is False)."""

    winner: Candidate
    confirmed: bool
    reason: str
    leader: str = ""
    pairs: int = 0
    ratios: dict[str, tuple[float, float]] = field(default_factory=dict)  # label: (ratio, noise)


def compare(leader: list[float], other: list[float]) -> tuple[float, float]:
    """How much slower ``other`` was than ``leader`` on paired timings: the geometric mean
    of the time ratios, and the noise as a factor (the 95% interval of the mean log ratio)."""
    logs = [math.log(b / a) for a, b in zip(leader, other, strict=False) if a > 0 and b > 0]
    if len(logs) < 2:
        return 1.0, math.inf
    error = statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(statistics.fmean(logs)), math.exp(t95(len(logs) - 1) * error)


def confirm(
    contenders: list[Candidate],
    default: Candidate,
    time_one: Callable[[Candidate, int], float],
    budget: float,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Time ``contenders`` (the default among them) again, interleaved image by image in a
    rotating order, until the fastest beats every other by more than the noise, or the next
    pass would overrun ``budget``. Without a clear winner the default layout is kept."""
    start = clock()
    times: dict[int, list[float]] = {id(c): [] for c in contenders}
    slowest = max((max(c.times, default=0.0) for c in contenders), default=0.0)
    i = 0
    while True:
        leader = min(contenders, key=lambda c: statistics.median(times[id(c)] or c.times))
        others = [c for c in contenders if c is not leader]
        ratios = {c.label: compare(times[id(leader)], times[id(c)]) for c in others}
        if i >= MIN_PAIRS and all(r / noise > 1 for r, noise in ratios.values()):
            reason = "faster than the others beyond the noise"
            return Verdict(leader, True, reason, leader.label, i, ratios)
        if clock() - start + slowest * len(contenders) > budget or not others:
            break
        order = contenders[i % len(contenders) :] + contenders[: i % len(contenders)]
        for candidate in order:
            times[id(candidate)].append(time_one(candidate, i))
            slowest = max(slowest, times[id(candidate)][-1])
        i += 1
    unclear = [label for label, (r, noise) in ratios.items() if r / noise <= 1]
    if not others:
        reason = "only the default layout could be measured"
    elif unclear:
        reason = f"could not tell {leader.label} from {' or '.join(unclear)} within the budget"
    else:
        reason = f"the budget allowed {i} of the {MIN_PAIRS} images needed to judge the noise"
    return Verdict(default, False, reason, leader.label, i, ratios)


def is_default(values: Mapping[str, Any], cores: int) -> bool:
    """Whether a candidate is rmcli's default layout (all cores, sequential, spinning, unbound)."""
    return values.get("backend", "cpu-pinned") == "cpu-pinned" and (
        values["precision"],
        values["intra_threads"],
        values["execution_mode"],
        values["allow_spinning"],
        values["cpu_binding"],
    ) == ("fp32", cores, "sequential", True, "")


def by_distance(space: Sequence[dict[str, Any]], cores: int) -> list[dict[str, Any]]:
    """The default layout first, then the others by how many values they change from it, so
    a budget that cannot build them all still tries each change on its own first."""
    default = next((v for v in space if is_default(v, cores)), None)
    if default is None:
        return list(space)

    def changes(v: dict[str, Any]) -> int:
        keys = [k for k in default if k != "inter_threads"]  # it comes with parallel mode
        if v["intra_threads"] == 1 and v["execution_mode"] == "sequential":
            keys.remove("allow_spinning")  # no pool to spin: not a change of its own
        return sum(v.get(k) != default[k] for k in keys)

    return sorted(space, key=changes)


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """In the worker: build candidate sessions while they fit the budget, halve, confirm."""
    from rmcli.config.settings import Layer, layout_name, resolve
    from rmcli.engine.layout import pin_calling_thread
    from rmcli.engine.remover import Remover
    from rmcli.images.imaging import load_image
    from rmcli.tools.bench_worker import session_defaults

    deadline = request["deadline"]  # time.time() by which the command must be done

    def left() -> float:
        return deadline - time.time() - EXIT_SECONDS

    flags = {k: (v, f"tune --{k.replace('_', '-')}") for k, v in request["model"].items()}
    # saved layouts must not leak into candidates
    base = session_defaults(resolve(flags, flags_layer=Layer.API))
    images = [load_image(path, path) for path in request["images"]]
    cores = request["cores"]
    ordered = by_distance(request["candidates"], cores)
    pool: list[Candidate] = []
    removers: dict[int, Remover] = {}
    skipped: list[tuple[dict[str, Any], str]] = []  # (values, why not built)
    build = 0.0  # the slowest session build + warm-up so far
    grown = 0.0  # the most one session (and its warm-up) added to this process, MiB
    build_until = time.time() + BUILD_SHARE * left()
    for values in ordered:
        if pool and time.time() + build > build_until:
            skipped.append((values, "budget"))
            continue
        if pool and available_mib() < 2 * grown:  # leave a session's worth free
            skipped.append((values, "memory"))
            continue
        began, before = time.time(), resident_mib()
        candidate = Candidate(values)
        settings = base.with_values("tune", **_settable(values))
        remover = Remover(settings=settings)
        candidate.session_seconds = remover.session.seconds_to_create
        remover.mask_of(images[0])  # warm-up
        removers[id(candidate)] = remover
        pool.append(candidate)
        build = max(build, time.time() - began)
        grown = max(grown, resident_mib() - before)
    rejected = within_error_budget(pool, removers, images, base["mask_error_budget"])
    pool = [c for c in pool if c not in rejected]
    default = next((c for c in pool if is_default(c.values, cores)), pool[0])

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

    try:
        board = successive_halving(pool, time_one, HALVING_SHARE * left())
        contenders = [c for c in board if c.rounds == board[0].rounds][:2]
        contenders += [default] if default not in contenders else []
        verdict = confirm(contenders, default, time_one, left())
    finally:
        for caller in callers.values():
            caller.shutdown()
    return {
        "model": base["model"] if not base["model_path"] else removers[id(default)].model.name,
        "layout_name": layout_name(base["model"], base["model_path"]),
        "seconds": time.time() - request["started"],
        "leaderboard": [_entry(c) for c in board],
        "winner": _entry(verdict.winner),
        "confirmed": verdict.confirmed,
        "reason": verdict.reason,
        "leader": verdict.leader,
        "pairs": verdict.pairs,
        "ratios": verdict.ratios,
        "default": default.label,
        "skipped": [(Candidate(v).label, why) for v, why in skipped],
        "mask_error_budget": base["mask_error_budget"],
        "rejected": [
            {"label": c.label, "values": c.values, "mask_error": c.mask_error} for c in rejected
        ],
    }


def available_mib() -> float:
    """Memory the system can still give (``MemAvailable``), MiB; infinite when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.inf


def resident_mib() -> float:
    """This process's resident memory now, MiB (0 when unknown)."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


EXIT_SECONDS = 0.5  # kept for the worker to exit and the command to print and save


def _entry(c: Candidate) -> dict[str, Any]:
    return {
        "label": c.label,
        "values": c.values,
        "median_seconds": c.median if c.times else None,
        "images_timed": len(c.times),
        "rounds": c.rounds,
        "session_seconds": c.session_seconds,
        "mask_error": c.mask_error,
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


def run_tune(
    model: Mapping[str, str], budget: float, images: Sequence[Path], started: float
) -> dict[str, Any]:
    """Run the search in a fresh worker process, done by ``started + budget`` (``time.time()``);
    the worker is stopped if it runs over (an error: not even one candidate fitted)."""
    from rmcli.cpus import allowed_cpus, usable_cpu_count

    if budget <= 0:
        raise UsageError("--budget must be a positive number of seconds")
    request = {
        "model": dict(model),
        "started": started,
        "deadline": started + budget,
        "images": [str(p) for p in images],
        "cores": usable_cpu_count(),
        "candidates": candidates(allowed_cpus(), usable_cpu_count(), openvino_precisions()),
    }
    timeout = max(0.1, started + budget - time.time())
    result = call("rmcli.tools.tune", request, timeout=timeout)
    if result.get("error", "").startswith("stopped after"):
        raise UsageError(
            f"--budget {budget:g} s ran out before one layout was measured; give tune more time"
        )
    if "error" in result:
        raise RmcliError(f"tune failed: {result['error']}")
    return result


def openvino_precisions() -> list[str]:
    """The precisions openvino can run here: [] without it, fp32, and bf16 where native."""
    from rmcli.tools.bench import openvino_configurations

    return [c.values["precision"] for c in openvino_configurations({}) if not c.absent]


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


def save_layout(name: str, values: Mapping[str, Any]) -> Path:
    """Store ``values`` as the tuned ``[layout.<name>]`` table of the user config file."""
    from rmcli.config.file import config_path, save_layout

    path = config_path()
    save_layout(path, name, values)  # locked and atomic; a broken file raises and is left alone
    return path


def format_leaderboard(result: Mapping[str, Any]) -> str:
    """The leaderboard as aligned text, best first."""
    board = result["leaderboard"]
    best_rounds = board[0]["rounds"] if board else 0
    lines = [f"{'#':>2}  {'median ms':>9}  {'images':>6}  {'rounds':>6}  {'mask err':>8}  layout"]
    for rank, entry in enumerate(board, 1):
        mark = "" if entry["rounds"] == best_rounds else "  (dropped)"
        if not entry["images_timed"]:
            mark = "  (not timed: budget)"
        median = "-" if entry["median_seconds"] is None else f"{1000 * entry['median_seconds']:.1f}"
        lines.append(
            f"{rank:>2}  {median:>9}  {entry['images_timed']:>6}  "
            f"{entry['rounds']:>6}  {entry.get('mask_error', 0.0):>8.2f}  {entry['label']}{mark}"
        )
    budget = result.get("mask_error_budget")
    for entry in result.get("rejected", []):
        lines.append(
            f"{'-':>2}  {'':>9}  {'':>6}  {'':>6}  {entry['mask_error']:>8.2f}  "
            f"{entry['label']}  (rejected: mask error over the budget {budget:g})"
        )
    for label, why in result.get("skipped", []):
        lines.append(f"{'-':>2}  {'':>9}  {'':>6}  {'':>6}  {'':>8}  {label}  (not built: {why})")
    return "\n".join(lines)


def format_verdict(result: Mapping[str, Any]) -> str:
    """The confirmation: each runner-up's time ratio to the leader, with the noise."""
    lines = [f"confirmation: {result['pairs']} interleaved images each, leader {result['leader']}"]
    for label, (ratio, noise) in result["ratios"].items():
        shown = "unknown" if math.isinf(noise) else f"x/ {noise:.3f}"
        lines.append(f"  {label}: {ratio:.3f}x the leader's time (noise {shown})")
    if result["confirmed"]:
        lines.append(f"winner: {result['winner']['label']} ({result['reason']})")
    else:
        lines.append(f"no clear winner: {result['reason']}; keeping the default layout")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(serve(measure))
