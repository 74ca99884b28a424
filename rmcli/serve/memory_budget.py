"""The service's memory budget: what each model costs in bytes, admission and eviction."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("rmcli.serve")

MIB = 1 << 20
RUN_BYTES_PER_PIXEL = 1536  # the estimate of one inference's memory, per model input pixel
BUDGET_SHARE = 0.5  # serve_memory_budget 0: this share of the cgroup limit, else of MemAvailable


def default_budget() -> tuple[int, str]:
    """``BUDGET_SHARE`` of the cgroup's memory limit, else of the memory available now."""
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            text = handle.read().strip()
        if text.isdigit():
            return int(int(text) * BUDGET_SHARE), f"{BUDGET_SHARE:.0%} of the cgroup memory limit"
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    return int(available * BUDGET_SHARE), (
                        f"{BUDGET_SHARE:.0%} of the memory available at start"
                    )
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30, "4 GiB (neither a cgroup limit nor /proc/meminfo found)"


def mib(size: int) -> str:
    return f"{size / MIB:,.0f} MiB"


@dataclass
class ModelCost:
    """What one model costs: slot-seconds per request and bytes (its session, one inference)."""

    seconds: float = 0.0  # moving average of the seconds a request holds a slot (0: unknown)
    session_bytes: int = 0  # resident memory added by building its session
    run_bytes: int = 0  # resident memory added by one inference at a time
    measured: bool = False  # both bytes measured (else estimated from the model's sizes)

    def alone(self) -> int:
        """Bytes its session and one inference need."""
        return self.session_bytes + self.run_bytes


class MemoryBudget:
    """Bytes held by loaded sessions and their inferences, within ``total``.

    A loaded session holds its build's bytes, plus one inference's bytes per run at once that
    it has had (ONNX Runtime's arena keeps them; with ``cpu_mem_arena`` off, per run in
    flight). Admitting a run that needs more may evict idle sessions, least recently used
    first, never one with work in flight. Thread-safe.
    """

    def __init__(
        self, total: int, source: str, drop: Callable[[str], None], arena: bool = True
    ) -> None:
        self.total = total
        self.source = source
        self.costs: dict[str, ModelCost] = {}
        self.evictions: dict[str, int] = {}
        self._drop = drop
        self._arena = arena
        self._runs: OrderedDict[str, int] = OrderedDict()  # loaded model: runs its memory holds
        self._inflight: dict[str, int] = {}
        self._lock = threading.RLock()

    def describe(self) -> str:
        return f"memory budget {mib(self.total)} ({self.source})"

    def cost(self, name: str) -> ModelCost:
        with self._lock:
            return self.costs.setdefault(name, ModelCost())

    def estimate(self, name: str, weights_bytes: int, input_pixels: int) -> None:
        """Until measured: the session as twice its weights, an inference by its input size."""
        cost = self.cost(name)
        if not cost.measured:
            cost.session_bytes = max(cost.session_bytes, 2 * weights_bytes)
            cost.run_bytes = max(cost.run_bytes, RUN_BYTES_PER_PIXEL * input_pixels)

    def held(self, name: str | None = None) -> int:
        """Bytes counted for ``name``'s session and runs (None: all models)."""
        with self._lock:
            names = [name] if name is not None else list(self._runs)
            return sum(self._bytes(n) for n in names if n in self._runs)

    def _bytes(self, name: str) -> int:
        cost = self.costs.setdefault(name, ModelCost())
        return cost.session_bytes + self._runs[name] * cost.run_bytes

    def loaded(self) -> dict[str, int]:
        """Loaded models and the bytes counted for each, least recently used first."""
        with self._lock:
            return {name: self._bytes(name) for name in self._runs}

    def too_large(self, name: str) -> str | None:
        """Why ``name`` can never run within the budget (its session and one run), or None."""
        cost = self.cost(name)
        if cost.alone() <= self.total:
            return None
        how = "measured" if cost.measured else "estimated"
        return (
            f"model {name} needs about {mib(cost.alone())} ({how}: session "
            f"{mib(cost.session_bytes)} + one inference {mib(cost.run_bytes)}), more than the "
            f"memory budget of {mib(self.total)} (serve_memory_budget, {self.source})"
        )

    def reserve(self, name: str) -> bool:
        """Count one more run of ``name`` if it fits, evicting idle sessions; else False."""
        with self._lock:
            cost = self.costs.setdefault(name, ModelCost())
            runs = self._runs.get(name)
            inflight = self._inflight.get(name, 0)
            extra = cost.session_bytes if runs is None else 0
            if inflight + 1 > (runs or 0):
                extra += cost.run_bytes
            held = sum(self._bytes(n) for n in self._runs)
            if held + extra > self.total:
                idle = [n for n in self._runs if n != name and not self._inflight.get(n)]
                alone = not any(self._inflight.values())  # a lone run may always try
                if held + extra - sum(self._bytes(n) for n in idle) > self.total and not alone:
                    return False
                for old in idle:
                    if held + extra <= self.total:
                        break
                    held -= self._bytes(old)
                    self._evict(old, "to make room for " + name)
            self._runs[name] = max(runs or 0, inflight + 1)
            self._runs.move_to_end(name)
            self._inflight[name] = inflight + 1
            return True

    def release(self, name: str) -> None:
        """A run of ``name`` ended."""
        with self._lock:
            self._inflight[name] = max(0, self._inflight.get(name, 0) - 1)
            if not self._arena and name in self._runs:
                self._runs[name] = self._inflight[name]

    def inflight(self, name: str) -> int:
        return self._inflight.get(name, 0)

    def forget(self, name: str) -> None:
        """``name``'s session went (idle or over serve_max_sessions): its bytes are free."""
        with self._lock:
            if name in self._runs and not self._inflight.get(name):
                del self._runs[name]

    def evict(self, name: str, why: str) -> None:
        """Drop ``name``'s session now unless it has work in flight."""
        with self._lock:
            if name in self._runs and not self._inflight.get(name):
                self._evict(name, why)

    def _evict(self, name: str, why: str) -> None:
        del self._runs[name]
        self.evictions[name] = self.evictions.get(name, 0) + 1
        log.info("session %s evicted (memory budget, %s)", name, why)
        self._drop(name)

    def measured(self, name: str, session_bytes: int | None, run_bytes: int) -> None:
        """What a build (None: no build) and a run of ``name`` added to resident memory: the
        first measurement replaces the estimate, later ones only raise it."""
        with self._lock:
            cost = self.costs.setdefault(name, ModelCost())
            if not cost.measured:
                if session_bytes is not None:
                    cost.session_bytes = max(session_bytes, 0)
                    cost.run_bytes = max(run_bytes, 0)
                    cost.measured = True
                return
            cost.run_bytes = max(cost.run_bytes, run_bytes)


def measure_rss() -> tuple[int, Callable[[], int]]:
    """Resident memory now, and a function giving the bytes added since (the peak, where
    Linux lets the peak be reset; else the growth)."""
    from rmcli.engine.stats import peak_rss_bytes, rss_bytes

    before = rss_bytes()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current RSS
        peak = True
    except OSError:
        peak = False
    return before, lambda: (peak_rss_bytes() if peak else rss_bytes()) - before
