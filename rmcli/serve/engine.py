"""The engine behind ``rmcli serve``: core budget, fair slot scheduler, memory budget,
session pool, pools.

One request goes: admission (bounded, see :mod:`rmcli.serve.app`), header check, a wait for
one of K inference slots (per-model queues served by measured cost, a run admitted only when
its model's memory fits the budget), decoding and inference on the slot's thread, then
composition and encoding on the codec pool. K x intra-op threads never exceeds the usable
cores, so concurrent requests queue instead of oversubscribing the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rmcli.cpus import usable_cpu_count
from rmcli.engine.stats import rss_bytes
from rmcli.errors import InputError, RmcliError, UsageError

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.config.settings import Settings
    from rmcli.contracts.model import Model
    from rmcli.contracts.output import ComposeOptions
    from rmcli.engine.session import LoadedSession

log = logging.getLogger("rmcli.serve")

MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}


class ServeError(RmcliError):
    """An expected failure answered with ``status`` and a one-line reason."""

    def __init__(
        self, status: int, reason: str, retry_after: int | None = None, tag: str = ""
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.tag = tag  # for metrics: why a 503 was given (queue_full, deadline)


@dataclass(frozen=True)
class SlotBudget:
    """K inference slots of ``threads`` intra-op threads each; K x threads <= usable cores.

    Built on :class:`rmcli.engine.layout.CoreBudget`; the slots share one session per model,
    so every slot gets the smallest share.
    """

    usable: int
    slots: int
    threads: int

    @classmethod
    def split(cls, usable: int, wanted_slots: int = 0) -> SlotBudget:
        """``wanted_slots`` clamped to the cores; 0: one slot per two cores.

        Two-thread slots cost little speed (ONNX Runtime scales well from one thread to two)
        and halve the activation memory held by concurrent runs (about 270 MB per u2netp
        run); ``serve_slots`` = cores gives single-thread slots, the most throughput.
        """
        from rmcli.engine.layout import CoreBudget

        budget = CoreBudget(max(1, usable))
        if wanted_slots > budget.cores:
            log.warning(
                "serve_slots %d is above the %d usable cores: using %d slots of 1 thread",
                wanted_slots,
                budget.cores,
                budget.cores,
            )
        shares = budget.split(wanted_slots or max(1, budget.cores // 2))
        return cls(budget.cores, len(shares), min(shares))

    def slot_settings(self, settings: Settings) -> Settings:
        """``settings`` whose sessions fit one slot (intra_threads at most the slot's share).

        See :func:`concurrent_callers` for spinning and OpenVINO streams.
        """
        from rmcli.engine.layout import CoreBudget

        settings = CoreBudget(self.usable).slot_settings(settings, self.slots)
        return concurrent_callers(settings, self.slots)


def concurrent_callers(settings: Settings, callers: int) -> Settings:
    """``settings`` for one session that ``callers`` threads run at once.

    Spinning is off unless set: a spinning intra-op thread takes CPU from the other callers,
    the codec pool and the event loop. OpenVINO gets one stream per caller unless
    ``openvino_streams`` is set: with one stream, concurrent runs wait for each other.
    """
    if not settings.given("allow_spinning"):
        settings = settings.with_values("serve: slots share the cores", allow_spinning=False)
    if callers > 1 and not settings.given("openvino_streams"):
        settings = settings.with_values(
            "serve: one OpenVINO stream per slot", openvino_streams=callers
        )
    return settings


class FairScheduler:
    """K slots shared by per-model queues in proportion to cost, FIFO within one model.

    Start-time fair queueing: each model has a virtual clock, the slot-seconds it has been
    given (its measured seconds per request, ``cost(key)``, per grant); a free slot goes to the
    waiting model whose clock is lowest, so light models get many requests in while a heavy one
    runs one, and the heavy one is not starved. A model whose queue becomes non-empty starts
    level with the clock of the last grant (no credit saved while idle). ``admit(key)`` (the
    memory budget) may hold a model back: one with work in flight is skipped (its concurrency
    is capped by what fits), one with none blocks the others until memory frees, so it is
    never starved by lighter ones. Cancelling a waiter takes it out of its queue; a slot
    granted to a waiter cancelled at that moment is passed on. Event-loop only (not
    thread-safe); release from threads through ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        slots: int,
        cost: Callable[[str], float] = lambda key: 1.0,
        admit: Callable[[str], bool] = lambda key: True,
    ) -> None:
        self.slots = slots
        self.free = slots
        self.waiting = 0
        self.running: dict[str, int] = {}  # slots held, per model
        self._cost = cost
        self._admit = admit
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._virtual: dict[str, float] = {}
        self._clock = 0.0  # the virtual start of the last grant

    @property
    def busy(self) -> int:
        return self.slots - self.free

    def queued(self, key: str) -> int:
        """Requests of ``key`` waiting for a slot."""
        return sum(not f.done() for f in self._queues.get(key, ()))

    def queues(self) -> dict[str, int]:
        """Waiting requests per model (models with none left out)."""
        return {key: n for key in self._queues if (n := self.queued(key))}

    def expected(self, key: str, seconds: Callable[[str], float]) -> float:
        """Seconds until one more request of ``key`` would be done, as the fair schedule serves
        it: its own queue's work, plus each other queue's work up to as much as its own (fair
        shares), spread over the slots, plus the earliest a running request frees its slot.
        ``seconds(key)``: a model's measured slot-seconds per request."""
        own = (self.queued(key) + 1) * seconds(key)
        ahead = sum(
            min(self.queued(other) * seconds(other), own) for other in self._queues if other != key
        )
        running = [seconds(k) for k, n in self.running.items() if n > 0]
        return (own + ahead) / max(1, self.slots) + (min(running) if running else 0.0)

    async def acquire(self, key: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._virtual[key] = max(self._virtual.get(key, 0.0), self._clock)
        queue.append(future)
        self.waiting += 1
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # granted as we were cancelled: hand the slot on
            else:
                queue = self._queues.get(key)
                if queue is not None and future in queue:
                    queue.remove(future)
                    self.waiting -= 1
                    if not queue:
                        del self._queues[key]
                self._dispatch()  # a model blocked behind this one may go now
            raise

    def resize(self, slots: int) -> None:
        """Change K (a Dask cluster's threads come and go); waiters get the new slots."""
        self.free += slots - self.slots
        self.slots = slots
        self._dispatch()

    def release(self, key: str = "") -> None:
        """A slot of ``key`` is free again."""
        if key in self.running:
            self.running[key] -= 1
        self.free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant free slots to the waiting models, lowest virtual clock first."""
        while self.free > 0 and self.waiting:
            chosen = None
            for key in sorted(self._live(), key=lambda k: self._virtual[k]):
                if self._admit(key):
                    chosen = key
                    break
                if not self.running.get(key):
                    return  # it waits for memory that only finishing work frees: all wait
            if chosen is None:
                return
            queue = self._queues[chosen]
            future = queue.popleft()
            self.waiting -= 1
            if not queue:
                del self._queues[chosen]
            self._clock = self._virtual[chosen]
            self._virtual[chosen] += self._cost(chosen)
            self.free -= 1
            self.running[chosen] = self.running.get(chosen, 0) + 1
            future.set_result(None)

    def _live(self) -> list[str]:
        """Models with a waiter whose future is not done (cancelled ones dropped)."""
        for key in list(self._queues):
            queue = self._queues[key]
            while queue and queue[0].done():
                queue.popleft()
                self.waiting -= 1
            if not queue:
                del self._queues[key]
        return list(self._queues)


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


@dataclass
class _Entry:
    loaded: LoadedSession
    last_used: float


class SessionPool:
    """Sessions per (model, backend, session settings): built once, LRU and idle-TTL bounded.

    Simultaneous first requests for one key wait for the single build in progress.
    """

    def __init__(
        self,
        max_sessions: int,
        ttl: float,
        build: Callable[[Model, Any, Settings], LoadedSession] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[str], None] = lambda name: None,
    ) -> None:
        from rmcli.engine.session import build_session

        self.max_sessions = max_sessions
        self.ttl = ttl
        self.builds = 0
        self.evictions = 0
        self._build = build or build_session
        self._clock = clock
        self._on_evict = on_evict
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._building: dict[tuple, Future[LoadedSession]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, model: Model, backend: Any, settings: Settings) -> bool:
        """Whether the session for these is loaded (a :meth:`get` builds nothing)."""
        return self._key(model, backend, settings) in self._entries

    def drop(self, name: str) -> None:
        """Forget every session of the model ``name`` (runs in flight keep theirs till done)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == name]:
                del self._entries[key]

    @staticmethod
    def _key(model: Model, backend: Any, settings: Settings) -> tuple:
        return (model.name, model.weights, backend.name, settings.session_key())

    def get(self, model: Model, backend: Any, settings: Settings) -> LoadedSession:
        key = self._key(model, backend, settings)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.last_used = self._clock()
                self._entries.move_to_end(key)
                return entry.loaded
            pending = self._building.get(key)
            builder = pending is None
            if builder:
                pending = self._building[key] = Future()
        if not builder:
            return pending.result()
        try:
            loaded = self._build(model, backend, settings)
        except BaseException as exc:
            with self._lock:
                del self._building[key]
            pending.set_exception(exc)
            raise
        evicted = []
        with self._lock:
            self.builds += 1
            self._entries[key] = _Entry(loaded, self._clock())
            del self._building[key]
            while len(self._entries) > self.max_sessions:
                old, _ = self._entries.popitem(last=False)
                self.evictions += 1
                log.info("session %s evicted (least recently used)", old[0])
                evicted.append(old[0])
        for name in evicted:  # outside the lock: the budget's lock is taken before ours
            self._on_evict(name)
        pending.set_result(loaded)
        return loaded

    def evict_idle(self) -> int:
        """Drop sessions unused for ``ttl`` seconds; how many went."""
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._entries.items() if now - e.last_used >= self.ttl]
            for key in stale:
                del self._entries[key]
                log.info("session %s evicted (idle)", key[0])
            self.evictions += len(stale)
        for key in stale:
            self._on_evict(key[0])
        return len(stale)


@dataclass
class Job:
    """One image to cut out, as a route hands it to the engine."""

    data: bytes
    model: str
    options: ComposeOptions
    fmt: str = "png"
    background: bytes | None = None
    label: str = "upload"
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Output:
    body: bytes
    media_type: str
    model: str


class Engine:
    """Runs jobs under the core budget; owns the pools, the scheduler and the sessions.

    Inferences run in this process, on K slot threads. :class:`rmcli.serve.cluster.DaskEngine`
    runs them on Dask workers instead, behind the same admission, deadline and metrics.
    """

    executor = "local"

    def __init__(self, settings: Settings) -> None:
        from rmcli.engine.registry import get_backend
        from rmcli.engine.remover import model_for

        self.settings = settings
        self.budget = SlotBudget.split(usable_cpu_count(), settings["serve_slots"])
        self.backend = get_backend(settings["backend"])
        self.default_model = model_for(settings)
        codec = settings["serve_codec_threads"] or self.budget.usable
        self.infer_pool = ThreadPoolExecutor(self.budget.slots, thread_name_prefix="rmcli-infer")
        self.codec_pool = ThreadPoolExecutor(codec, thread_name_prefix="rmcli-codec")
        total, source = settings["serve_memory_budget"], settings.source("serve_memory_budget")
        if not total:
            total, source = default_budget()
        self.memory = MemoryBudget(
            total, source, self._drop, arena=bool(settings.get("cpu_mem_arena", True))
        )
        self.scheduler = FairScheduler(self.budget.slots, self._core_seconds, self.memory.reserve)
        self.sessions = SessionPool(
            settings["serve_max_sessions"],
            settings["serve_session_ttl"],
            on_evict=self.memory.forget,
        )
        allowed = [m.strip() for m in settings["serve_models"].split(",") if m.strip()]
        self.listed_models = allowed
        self.allowed_models = set(allowed) | {self.default_model.name} if allowed else None
        self.fetch_models = settings["serve_fetch_models"]
        self._present: set[str] = {self.default_model.name}  # weights known to be here
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, tuple[float, str]] = {}  # model: (when, why) of a failed fetch
        self.matting = MattingWarmUp()
        self._known: set[str] | None = None  # the catalogue's model names
        self.intra_threads = self.budget.threads
        self.held_seconds = 0.0  # moving average of how long one job holds a slot
        self._models: dict[str, tuple[Model, Settings]] = {}
        self._observe: Callable[[str, float], None] = lambda stage, seconds: None

    def _drop(self, name: str) -> None:
        self.sessions.drop(name)

    def seconds(self, name: str) -> float:
        """Measured seconds a request of ``name`` holds a slot (before any: the average)."""
        cost = self.memory.costs.get(name)
        return cost.seconds if cost is not None and cost.seconds else self.held_seconds

    def _core_seconds(self, name: str) -> float:
        """What one request of ``name`` costs the fair schedule (1.0 before any measurement)."""
        return self.seconds(name) or 1.0

    def observe_with(self, observe: Callable[[str, float], None]) -> None:
        """Report each stage's seconds (queue, decode, inference, encode) to ``observe``."""
        self._observe = observe

    def capacity(self) -> int:
        """Inference requests admitted at once: the slots plus a queue (``serve_queue``) for
        each model asked for so far."""
        return self.scheduler.slots + self.settings["serve_queue"] * max(1, len(self._models))

    def describe(self) -> str:
        """Where inferences run, for the start-up log line."""
        return (
            f"{self.budget.slots} inference slots x {self.budget.threads} intra-op threads "
            f"({self.budget.usable} usable cores), {self.memory.describe()}"
        )

    def unavailable(self) -> str | None:
        """Why no inference can run now (None: it can); local slots always can."""
        return None

    def label(self, name: str | None) -> str:
        """``name`` as a metrics label: a model this server knows, else ``other``."""
        from rmcli.engine.registry import models as catalogue

        if self._known is None:
            self._known = set(catalogue())
        name = name or self.default_model.name
        return name if name in self._models or name in self._known else "other"

    def model(self, name: str | None) -> tuple[Model, Settings]:
        """The model and the session settings for a request naming ``name`` (None: default).

        Sessions of other models than the default never download weights (``offline``):
        missing weights are fetched only by :meth:`available`, once, in the background."""
        name = name or self.default_model.name
        if self.allowed_models is not None and name not in self.allowed_models:
            raise ServeError(
                400,
                f"model {name!r} is not served here (serve_models: "
                f"{', '.join(sorted(self.allowed_models))})",
            )
        found = self._models.get(name)
        if found is None:
            from rmcli.engine.remover import model_for

            if name == self.default_model.name:
                settings = self.settings
            else:
                settings = self.settings.with_values(
                    "request", model=name, model_path="", offline=True
                )
            settings = self.session_settings(settings)
            found = (model_for(settings), settings)  # an unknown name is a UsageError
            self._models[name] = found
            self.memory.estimate(name, _weights_bytes(found[0]), _input_pixels(found[0]))
        return found

    def session_settings(self, settings: Settings) -> Settings:
        """The settings of the sessions behind requests: sized for one local slot."""
        return self.budget.slot_settings(settings)

    async def start(self) -> None:
        """Bind to the running loop (inference threads release slots to it)."""
        self._loop = asyncio.get_running_loop()
        self._fetch_lock = asyncio.Lock()

    def require_matting(self) -> None:
        """503 + Retry-After while pymatting's kernels are still being compiled."""
        reason = self.matting.unready()
        if reason:
            raise ServeError(503, reason, self.settings["serve_retry_after"], tag="unavailable")

    async def available(self, model: Model, settings: Settings) -> None:
        """Return when ``model``'s weights are here; else 400 (fetching not allowed) or 503 +
        Retry-After while its one background fetch runs (``serve_fetch_models``, ``--models``)."""
        name = model.name
        if name in self._present:
            return
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, _weights_here, model, settings):
            self._present.add(name)
            return
        if not (self.fetch_models or name in self.listed_models):
            raise ServeError(
                400,
                f"model {name!r} is not available here: its weights are not on this server "
                "and fetching models on request is off (serve_fetch_models)",
            )
        retry = self.settings["serve_retry_after"]
        failed = self._failed.get(name)
        if failed and time.monotonic() - failed[0] < FETCH_RETRY:
            raise ServeError(503, f"model {name!r}: {failed[1]}", max(retry, 60), "unavailable")
        self.fetch(name)
        raise ServeError(
            503, f"model {name!r} is being fetched; retry after {retry} s", retry, "unavailable"
        )

    def fetch(self, name: str) -> asyncio.Task[None]:
        """The one background fetch of ``name``'s weights (started if none runs)."""
        task = self._fetches.get(name)
        if task is None:
            task = self._fetches[name] = asyncio.ensure_future(self._fetch(name))
        return task

    async def _fetch(self, name: str) -> None:
        from rmcli.engine.session import store_for

        model, settings = self.model(name)
        online = settings.with_values("serve: fetch", offline=self.settings["offline"])
        try:
            async with self._fetch_lock:  # one fetch at a time
                started = time.perf_counter()
                log.info("fetching the weights of model %s", name)
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: store_for(online).ensure(model.weights, model_name=name)
                )
                log.info("model %s fetched in %.1f s", name, time.perf_counter() - started)
                self._present.add(name)
                self._failed.pop(name, None)
        except RmcliError as exc:
            log.error("cannot fetch model %s: %s", name, exc)
            self._failed[name] = (time.monotonic(), f"its weights could not be fetched: {exc}")
        finally:
            del self._fetches[name]

    async def preload(self) -> None:
        """Fetch the weights of the ``serve_models`` that are missing, one at a time."""
        for name in self.listed_models:
            try:
                model, settings = self.model(name)
            except RmcliError as exc:
                log.error("serve_models: %s", exc)
                continue
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, _weights_here, model, settings):
                self._present.add(name)
            else:
                await self.fetch(name)
            warm = self.settings["serve_warmup"] and self.executor == "local"
            if warm and name in self._present and name != self.default_model.name:
                try:
                    await self.warm_up(name)  # measures its memory before requests come
                except RmcliError as exc:
                    log.error("serve_models: %s: %s", name, exc)

    async def run(self, job: Job, deadline: float) -> Output:
        """Cut out ``job`` before the loop time ``deadline``; ServeError on expected failures."""
        model, settings = self.model(job.model)
        probe(job.data, job.label, settings["max_pixels"])
        await self.available(model, settings)
        reason = self.unavailable()
        if reason:
            raise ServeError(503, reason, self.settings["serve_retry_after"], tag="unavailable")
        too_large = self.memory.too_large(model.name)
        if too_large:
            raise ServeError(503, too_large, tag="memory")
        queued = self.scheduler.queued(model.name)
        if queued >= self.settings["serve_queue"] and self.scheduler.free <= 0:
            raise ServeError(
                503,
                f"busy: {self.settings['serve_queue']} requests for model {model.name} already "
                f"queued (serve_queue); retry after {self.settings['serve_retry_after']} s",
                retry_after=self.settings["serve_retry_after"],
                tag="queue_full",
            )
        self._refuse_if_late(deadline, model.name)
        try:
            async with asyncio.timeout_at(deadline):
                queued = time.perf_counter()
                await self.scheduler.acquire(model.name)
                job.timings["queue"] = time.perf_counter() - queued
                body = await self.cut_out(job, model, settings)
        except TimeoutError:
            raise ServeError(
                503,
                f"deadline of {self.settings['serve_deadline']:g} s passed before the image "
                "was done (serve_deadline)",
                retry_after=self.settings["serve_retry_after"],
                tag="deadline",
            ) from None
        for stage, seconds in job.timings.items():
            self._observe(stage, seconds)
        media = "image/png" if job.options.only_mask else MEDIA_TYPES[job.fmt]
        return Output(body, media, model.name)

    def _refuse_if_late(self, deadline: float, name: str) -> None:
        """503 now, not at the deadline, when the fair schedule cannot finish this request in
        time: its own model's queue, the other queues' share (see
        :meth:`FairScheduler.expected`), measured seconds per request of each model. It
        refuses only once every slot is taken and a measurement exists."""
        if not self.seconds(name) or not self.scheduler.slots or self.scheduler.free > 0:
            return
        expected = self.scheduler.expected(name, self.seconds)
        left = deadline - asyncio.get_running_loop().time()
        if expected > left:
            waiting = self.scheduler.waiting
            raise ServeError(
                503,
                f"busy: with the {waiting} requests queued (fair shares per model), this "
                f"{name} request needs about {expected:.1f} s, more than the {max(left, 0):.1f} s "
                f"left before the deadline (serve_deadline); retry after "
                f"{self.settings['serve_retry_after']} s",
                retry_after=self.settings["serve_retry_after"],
                tag="deadline",
            )

    def slot_done(self, seconds: float, name: str = "") -> None:
        """A slot was held ``seconds`` by ``name``: update the averages the schedule uses."""
        self.held_seconds = (
            seconds if not self.held_seconds else 0.8 * self.held_seconds + (0.2 * seconds)
        )
        if name:
            cost = self.memory.cost(name)
            cost.seconds = seconds if not cost.seconds else 0.8 * cost.seconds + 0.2 * seconds

    async def cut_out(self, job: Job, model: Model, settings: Settings) -> bytes:
        """On a slot (already acquired): decode and mask on the slot's thread, then compose
        and encode on the codec pool. The slot thread releases the slot."""
        loop = asyncio.get_running_loop()
        held = loop.run_in_executor(self.infer_pool, self._held, job, model, settings)
        image, mask = await _shielded(held)
        max_pixels = self.settings["max_pixels"]
        return await _shielded(
            loop.run_in_executor(self.codec_pool, finish, job, image, mask, max_pixels)
        )

    def _held(self, job: Job, model: Model, settings: Settings) -> tuple[Any, Any]:
        """On an inference slot: decode, then the mask; the slot is released when done."""
        try:
            loaded, built = self._session(model, settings)
            _, added = measure_rss()
            started = time.perf_counter()  # a session build is not what later jobs wait for
            image, mask = decode_and_mask(job, model, loaded, settings["max_pixels"])
            self.slot_done(time.perf_counter() - started, model.name)
            self.memory.measured(model.name, built, added())
            return image, mask
        finally:
            self._release_from_thread(model.name)

    def _session(self, model: Model, settings: Settings) -> tuple[LoadedSession, int | None]:
        """``model``'s session, and the resident bytes its build added (None: no build)."""
        if self.sessions.has(model, self.backend, settings):
            return self.sessions.get(model, self.backend, settings), None
        before, _ = measure_rss()
        loaded = self.sessions.get(model, self.backend, settings)
        return loaded, rss_bytes() - before

    def _release_from_thread(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self._release, name)

    def _release(self, name: str) -> None:
        self.memory.release(name)
        self.scheduler.release(name)

    async def warm_up(self, name: str | None = None) -> float:
        """Build a model's session (None: the default's) and run it once, on a slot, measuring
        its memory; the seconds it took."""
        started = time.perf_counter()
        model, settings = self.model(name)
        await self.scheduler.acquire(model.name)
        await _shielded(
            asyncio.get_running_loop().run_in_executor(self.infer_pool, self._warm, model, settings)
        )
        cost = self.memory.cost(model.name)
        log.info(
            "model %s: session %s, one inference %s (measured), %s",
            model.name,
            mib(cost.session_bytes),
            mib(cost.run_bytes),
            self.memory.describe(),
        )
        too_large = self.memory.too_large(model.name)
        if too_large:  # measured alone at start; its requests get 503 with this reason
            log.error("%s", too_large)
            self.memory.evict(model.name, "it does not fit")
        return time.perf_counter() - started

    def _warm(self, model: Model, settings: Settings) -> None:
        try:
            loaded, built = self._session(model, settings)
            _, added = measure_rss()
            started = time.perf_counter()
            warm(model, loaded)
            self.slot_done(time.perf_counter() - started, model.name)  # its first cost
            self.memory.measured(model.name, built, added())
        finally:
            self._release_from_thread(model.name)

    async def verify_weights(self) -> None:
        """Fetch (if allowed) and check the default model's weights, off the event loop."""
        from rmcli.engine.session import store_for

        model = self.default_model
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: store_for(self.settings).ensure(model.weights, model_name=model.name)
        )

    def evict_idle(self) -> None:
        """Drop the sessions idle for ``serve_session_ttl`` (called periodically)."""
        self.sessions.evict_idle()

    async def close(self) -> None:
        self.matting.stop()
        for task in list(self._fetches.values()):
            task.cancel()
        self.infer_pool.shutdown(wait=False, cancel_futures=True)
        self.codec_pool.shutdown(wait=False, cancel_futures=True)


FETCH_RETRY = 60.0  # seconds before a failed model fetch is tried again


def _weights_bytes(model: Model) -> int:
    """The size of ``model``'s weights file where known (0: not known yet)."""
    weights = model.weights
    if weights.path:
        with contextlib.suppress(OSError):
            return os.path.getsize(weights.path)
    return weights.size or 0


def _input_pixels(model: Model) -> int:
    width, height = getattr(model, "input_size", (320, 320))
    return width * height


def _weights_here(model: Model, settings: Settings) -> bool:
    """True when ``model``'s weights are on this machine (verified; never downloaded)."""
    from rmcli.engine.session import store_for
    from rmcli.errors import ModelError

    store = store_for(settings.with_values("serve: local only", offline=True))
    try:
        store.ensure(model.weights, model_name=model.name)
    except ModelError:
        return False
    return True


class MattingWarmUp:
    """pymatting's numba kernels compiled ahead into numba's cache, once per server start, in a
    child process at the lowest CPU priority (a cold compile takes minutes and would hold this
    process's GIL). Matting requests get 503 until it is done; the first one then loads the
    kernels from the cache (seconds)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error = ""
        self._child: subprocess.Popen | None = None
        self._stopped = False

    def start(self) -> None:
        import importlib.util

        if importlib.util.find_spec("pymatting") is None:
            self.done.set()  # matting requests get the install hint instead
            return
        log.info(
            "alpha matting: compiling pymatting's kernels (numba; the first start on a machine "
            "takes minutes); matting requests get 503 until then"
        )
        threading.Thread(target=self._compile, name="rmcli-matting-warmup", daemon=True).start()

    def _compile(self) -> None:
        started = time.perf_counter()
        try:
            code = "from rmcli.images.matting import warm_matting; warm_matting()"
            self._child = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, self._child.pid, 19)
            _, errors = self._child.communicate()
            if self._stopped:
                return
            if self._child.returncode != 0:
                last = (errors.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                raise RuntimeError(f"compiling failed: {last}")
            log.info("alpha matting ready (compiled in %.1f s)", time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - reported to matting requests
            self.error = f"alpha matting is unavailable: {exc}"
            log.error("%s", self.error)
        finally:
            self.done.set()

    def stop(self) -> None:
        """End a compile still running (the server stops)."""
        self._stopped = True
        if self._child is not None and self._child.poll() is None:
            self._child.kill()

    def unready(self) -> str | None:
        """Why matting cannot run now, or None."""
        if not self.done.is_set():
            return "alpha matting is not ready yet: its kernels are being compiled; retry later"
        return self.error or None


def decode_and_mask(
    job: Job, model: Model, loaded: LoadedSession, max_pixels: int
) -> tuple[Image.Image, Image.Image]:
    """Decode ``job``'s image and compute its mask, timing the decode and inference stages."""
    from rmcli.images.decoding import load_checked

    started = time.perf_counter()
    image = load_checked(job.data, job.label, max_pixels)
    job.timings["decode"] = time.perf_counter() - started
    started = time.perf_counter()
    mask = model.to_mask(loaded.run(model.preprocess(image)), image.size)
    job.timings["inference"] = time.perf_counter() - started
    return image, mask


def finish(job: Job, image: Image.Image, mask: Image.Image, max_pixels: int) -> bytes:
    """Compose (background, crop...) and encode; times the encode stage."""
    from rmcli.images.imaging import encodable, encode

    started = time.perf_counter()
    result = compose_with_background(job, image, mask, max_pixels)
    fmt = "png" if job.options.only_mask else job.fmt
    reason = encodable(result.size, fmt)
    if reason:
        raise ServeError(422, f"{job.label}: " + reason.replace("--format png", "format png"))
    body = encode(result, "png" if job.options.only_mask else job.fmt)
    job.timings["encode"] = time.perf_counter() - started
    return body


def warm(model: Model, loaded: LoadedSession) -> None:
    """Run ``loaded`` once on a small grey image (the first run allocates its buffers)."""
    from PIL import Image

    image = Image.new("RGB", (64, 48), (128, 128, 128))
    model.to_mask(loaded.run(model.preprocess(image)), image.size)


async def _shielded(future: asyncio.Future) -> Any:
    """Await a thread's work; when cancelled, the thread still finishes (its slot is freed
    by the thread itself) and its result is dropped."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved"
        raise


def probe(data: bytes, label: str, max_pixels: int) -> None:
    """Refuse from the header alone, before queueing: not an image (400), too large (422)."""
    from PIL import Image

    if not data:
        raise ServeError(400, f"{label}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        detail = str(exc).split(",")[0].replace("Image size", "size")
        raise ServeError(
            422, f"{label}: refused as a possible decompression bomb: {detail}"
        ) from None
    except Image.UnidentifiedImageError:
        raise ServeError(400, f"{label}: not an image (or a format Pillow cannot read)") from None
    except Exception as exc:  # noqa: BLE001 - any header Pillow cannot parse
        raise ServeError(400, f"{label}: cannot read the image header: {exc}") from None
    if width * height > max_pixels:
        raise ServeError(
            422,
            f"{label}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} set by max_pixels (RMCLI_MAX_PIXELS)",
        )


def compose_with_background(
    job: Job, image: Image.Image, mask: Image.Image, max_pixels: int
) -> Image.Image:
    """:func:`rmcli.compose.compose`, with an uploaded background image when the job has one."""
    from dataclasses import replace

    from PIL import Image

    from rmcli.colors import WHITE
    from rmcli.images.compose import compose, cover, flatten
    from rmcli.images.decoding import load_checked
    from rmcli.images.imaging import has_alpha

    if job.background is None or job.options.only_mask:
        return compose(image, mask, job.options, job.fmt, in_place=True)
    background = load_checked(job.background, "background image", max_pixels)
    options = replace(job.options, bgcolor=None, bg_image=None)
    result = compose(image, mask, options, "png", in_place=True)
    info = result.info
    result = Image.alpha_composite(cover(background, result.size), result.convert("RGBA"))
    if result.getchannel("A").getextrema() == (255, 255):
        result = result.convert("RGB")
    if job.fmt == "jpg" and has_alpha(result):
        result = flatten(result, WHITE)
    result.info = info
    return result


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and one-line reason for an expected failure."""
    from rmcli.errors import BackendError, ModelError

    if isinstance(exc, ServeError):
        return exc.status, str(exc)
    if isinstance(exc, InputError):
        return 400, str(exc)
    if isinstance(exc, UsageError):
        return 400, str(exc)
    if isinstance(exc, ModelError | BackendError):
        return 503, str(exc)
    return 400, str(exc)
