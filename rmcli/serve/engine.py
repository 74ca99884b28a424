"""The engine behind ``rmcli serve``: core budget, fair slot scheduler, session pool, pools.

One request goes: admission (bounded, see :mod:`rmcli.serve.app`), header check, a wait for
one of K inference slots (per-model queues served round-robin), decoding and inference on the
slot's thread, then composition and encoding on the codec pool. K x intra-op threads never
exceeds the usable cores, so concurrent requests queue instead of oversubscribing the CPU.
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
    """K slots handed out round-robin across models, FIFO within one model.

    ``acquire`` returns at once while a slot is free and nobody waits; otherwise the caller
    waits in its model's queue. Cancelling a waiter (deadline, client gone) takes it out of
    the queue; a slot granted to a waiter that is cancelled at that moment is passed on.
    Event-loop only (not thread-safe); release from threads through ``call_soon_threadsafe``.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.free = slots
        self.waiting = 0
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def busy(self) -> int:
        return self.slots - self.free

    async def acquire(self, key: str) -> None:
        if self.free > 0 and self.waiting == 0:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(key, deque()).append(future)
        self.waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # granted as we were cancelled: hand the slot on
            else:
                queue = self._queues.get(key)
                if queue is not None and future in queue:
                    queue.remove(future)
                    self.waiting -= 1
                    if not queue:
                        del self._queues[key]
            raise

    def resize(self, slots: int) -> None:
        """Change K (a Dask cluster's threads come and go); waiters get the new slots."""
        self.free += slots - self.slots
        self.slots = slots
        while self.free > 0 and self.waiting:
            self.free -= 1
            self.release()

    def release(self) -> None:
        if self.free < 0:  # the scheduler shrank: this slot is gone
            self.free += 1
            return
        while self._queues:
            key, queue = next(iter(self._queues.items()))
            future = queue.popleft()
            self.waiting -= 1
            if queue:
                self._queues.move_to_end(key)  # next model's turn
            else:
                del self._queues[key]
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


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
    ) -> None:
        from rmcli.engine.session import build_session

        self.max_sessions = max_sessions
        self.ttl = ttl
        self.builds = 0
        self.evictions = 0
        self._build = build or build_session
        self._clock = clock
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._building: dict[tuple, Future[LoadedSession]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: Model, backend: Any, settings: Settings) -> LoadedSession:
        key = (model.name, model.weights, backend.name, settings.session_key())
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
        with self._lock:
            self.builds += 1
            self._entries[key] = _Entry(loaded, self._clock())
            del self._building[key]
            while len(self._entries) > self.max_sessions:
                old, _ = self._entries.popitem(last=False)
                self.evictions += 1
                log.info("session %s evicted (least recently used)", old[0])
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
        self.scheduler = FairScheduler(self.budget.slots)
        self.sessions = SessionPool(settings["serve_max_sessions"], settings["serve_session_ttl"])
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

    def observe_with(self, observe: Callable[[str, float], None]) -> None:
        """Report each stage's seconds (queue, decode, inference, encode) to ``observe``."""
        self._observe = observe

    def capacity(self) -> int:
        """Inference requests admitted at once: the slots plus the queue (``serve_queue``)."""
        return self.scheduler.slots + self.settings["serve_queue"]

    def describe(self) -> str:
        """Where inferences run, for the start-up log line."""
        return (
            f"{self.budget.slots} inference slots x {self.budget.threads} intra-op threads "
            f"({self.budget.usable} usable cores)"
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

    async def run(self, job: Job, deadline: float) -> Output:
        """Cut out ``job`` before the loop time ``deadline``; ServeError on expected failures."""
        model, settings = self.model(job.model)
        probe(job.data, job.label, settings["max_pixels"])
        await self.available(model, settings)
        reason = self.unavailable()
        if reason:
            raise ServeError(503, reason, self.settings["serve_retry_after"], tag="unavailable")
        self._refuse_if_late(deadline)
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

    def _refuse_if_late(self, deadline: float) -> None:
        """503 now, not at the deadline, when the work queued ahead cannot finish in time.

        The estimate is (rounds of K slots ahead + this job's own) x the average slot time;
        it refuses only once every slot is taken and a measured average exists.
        """
        held, slots = self.held_seconds, self.scheduler.slots
        if not held or not slots or self.scheduler.free > 0:
            return
        rounds = self.scheduler.waiting // slots + 2  # the round running, those ahead, ours
        expected = rounds * held
        left = deadline - asyncio.get_running_loop().time()
        if expected > left:
            raise ServeError(
                503,
                f"busy: the {self.scheduler.waiting} requests queued ahead need about "
                f"{expected:.1f} s, more than the {max(left, 0):.1f} s left before the "
                f"deadline (serve_deadline); retry after {self.settings['serve_retry_after']} s",
                retry_after=self.settings["serve_retry_after"],
                tag="deadline",
            )

    def slot_done(self, seconds: float) -> None:
        """A slot was held ``seconds``: update the average the late refusal uses."""
        self.held_seconds = (
            seconds if not self.held_seconds else 0.8 * self.held_seconds + (0.2 * seconds)
        )

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
            loaded = self.sessions.get(model, self.backend, settings)
            started = time.perf_counter()  # a session build is not what later jobs wait for
            image, mask = decode_and_mask(job, model, loaded, settings["max_pixels"])
            self.slot_done(time.perf_counter() - started)
            return image, mask
        finally:
            self._release_from_thread()

    def _release_from_thread(self) -> None:
        self._loop.call_soon_threadsafe(self.scheduler.release)

    async def warm_up(self) -> float:
        """Build the default model's session and run it once, on a slot; the seconds it took."""
        started = time.perf_counter()
        model, settings = self.model(None)
        await self.scheduler.acquire(model.name)
        await _shielded(
            asyncio.get_running_loop().run_in_executor(self.infer_pool, self._warm, model, settings)
        )
        return time.perf_counter() - started

    def _warm(self, model: Model, settings: Settings) -> None:
        try:
            warm(model, self.sessions.get(model, self.backend, settings))
        finally:
            self._release_from_thread()

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


def warm_matting() -> None:
    """Run alpha matting once on a tiny image: numba compiles pymatting's kernels (or loads
    them from its cache)."""
    from PIL import Image

    from rmcli.contracts.output import ComposeOptions
    from rmcli.images.matting import matte_cutout

    image = Image.new("RGB", (32, 32), (200, 50, 50))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    matte_cutout(image, mask, ComposeOptions(alpha_matting=True))


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
            code = "from rmcli.serve.engine import warm_matting; warm_matting()"
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
