"""The inference service behind ``rmcli serve``: models, slots, memory, one request's way.

One request goes: admission (bounded, see :mod:`rmcli.serve.admission`), header check, a wait
for one of K inference slots (:mod:`rmcli.serve.scheduler`: per-model queues served by measured
cost; a run admitted only when its model fits :mod:`rmcli.serve.memory_budget`), decoding and
inference on the slot's thread, then composition and encoding on the codec pool: the stages of
:mod:`rmcli.images.stages`, on the sessions of the process's one session cache. K x intra-op
threads never exceeds the usable cores (:mod:`rmcli.serve.slots`), so concurrent requests
queue instead of oversubscribing the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from rmcli.cpus import usable_cpu_count
from rmcli.engine.remover import Remover
from rmcli.engine.session import SESSIONS
from rmcli.engine.stats import rss_bytes
from rmcli.errors import RmcliError
from rmcli.images import stages
from rmcli.images.decoding import check_header
from rmcli.serve.http_errors import ServeError
from rmcli.serve.matting_warmup import MattingWarmUp
from rmcli.serve.memory_budget import MemoryBudget, default_budget, measure_rss, mib
from rmcli.serve.scheduler import FairScheduler
from rmcli.serve.slots import SlotBudget

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.config.settings import Settings
    from rmcli.contracts.model import Model
    from rmcli.contracts.output import ComposeOptions

log = logging.getLogger("rmcli.serve")

T = TypeVar("T")
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}
HEAVY_INPUT_PIXELS = 1024 * 1024  # models with inputs this large may take several slots


def heavy_width(model: Model, settings: Settings) -> int:
    """Slots one request of ``model`` takes: ``serve_heavy_slots`` if its input has
    ``HEAVY_INPUT_PIXELS`` or more, else one."""
    return settings["serve_heavy_slots"] if input_pixels(model) >= HEAVY_INPUT_PIXELS else 1


@dataclass
class ImageRequest:
    """One image to cut out, as a route hands it to the service."""

    data: bytes
    model: str | None
    options: ComposeOptions
    fmt: str = "png"
    background: bytes | None = None
    label: str = "upload"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def out_format(self) -> str:
        """The format of the answer: a mask is always PNG."""
        return "png" if self.options.only_mask else self.fmt

    @contextlib.contextmanager
    def clock(self, stage: str) -> Iterator[None]:
        """Adds the seconds of ``stage`` to :attr:`timings` (a stage clock)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started


@dataclass
class ImageAnswer:
    body: bytes
    media_type: str
    model: str


def mask_request(remover: Remover, request: ImageRequest) -> tuple[Image.Image, Image.Image]:
    """On an inference slot: the request's image decoded, and its mask."""
    return stages.decode_and_mask(remover, request.data, request.label, request.clock)


def finish_request(
    request: ImageRequest, image: Image.Image, mask: Image.Image, max_pixels: int
) -> bytes:
    """On the codec pool: compose (over the uploaded background, if any) and encode."""
    from rmcli.images.imaging import load_image

    options = request.options
    if request.background is not None and not options.only_mask:
        background = load_image(request.background, "background image", max_pixels)
        options = replace(options, bg_image=background)
    fmt = request.out_format
    result = stages.compose_checked(image, mask, options, fmt, request.label, request.clock)
    del image, mask
    return stages.encoded(result, fmt, clock=request.clock)


def run_measured(memory: MemoryBudget, remover: Remover, work: Callable[[], T]) -> tuple[T, float]:
    """``work()`` on ``remover``'s session (built first if the session cache has none), with
    the resident bytes the build and the run added recorded in ``memory``; its result and the
    seconds it took (the build not counted: later requests do not wait for it)."""
    built = None
    if not SESSIONS.has(remover.session_key):
        before, _ = measure_rss()
        remover.session  # noqa: B018 - builds it
        built = rss_bytes() - before
    _, added = measure_rss()
    started = time.perf_counter()
    done = work()
    seconds = time.perf_counter() - started
    memory.measured(remover.model.name, built, added())
    return done, seconds


def warm(remover: Remover) -> None:
    """Run ``remover``'s session once on a small grey image (the first run allocates)."""
    from PIL import Image

    remover.mask_of(Image.new("RGB", (64, 48), (128, 128, 128)))


class InferenceService:
    """Runs requests under the core and memory budgets; owns the pools and the scheduler.

    Inferences run in this process, on K slot threads, on the sessions of the process's session
    cache (bounded here by ``serve_max_sessions`` and ``serve_session_ttl``). An executor plugin
    may run them elsewhere (``serve_service``: Dask's runs them on Dask workers), behind the
    same admission, deadline and metrics.
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
        self.scheduler = FairScheduler(
            self.budget.slots, self._core_seconds, self.memory.reserve, self.width
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
        self._models: dict[str, Remover] = {}
        self._unsubscribe: Callable[[], None] = lambda: None
        self._observe: Callable[[str, float], None] = lambda stage, seconds: None

    def _drop(self, name: str) -> None:
        SESSIONS.drop(name)

    def seconds(self, name: str) -> float:
        """Measured seconds a request of ``name`` holds a slot (before any: the average)."""
        cost = self.memory.costs.get(name)
        return cost.seconds if cost is not None and cost.seconds else self.held_seconds

    def _core_seconds(self, name: str) -> float:
        """What one request of ``name`` costs the fair schedule: the seconds it holds its
        slots times their number (1.0 before any measurement)."""
        return (self.seconds(name) or 1.0) * self.scheduler.width(name)

    def _slot_seconds(self, name: str) -> float:
        return self.seconds(name) * self.scheduler.width(name)

    def width(self, name: str) -> int:
        """Slots one request of ``name`` takes: ``serve_heavy_slots`` for a heavy model
        (input of ``HEAVY_INPUT_PIXELS`` or more), else one."""
        remover = self._models.get(name)
        return heavy_width(remover.model, self.settings) if remover is not None else 1

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

    def memory_report(self) -> dict[str, Any]:
        """The memory budget for /readyz: its bytes and source, what is held, by model."""
        return {
            "bytes": self.memory.total,
            "source": self.memory.source,
            "held": self.memory.held(),
            "loaded": self.memory.loaded(),
        }

    def loaded(self) -> dict[str, int]:
        """Models whose sessions are loaded, and the bytes each holds."""
        return self.memory.loaded()

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

    def remover(self, name: str | None) -> Remover:
        """The remover (model, session settings) for a request naming ``name`` (None: default).

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
            if name == self.default_model.name:
                settings = self.settings
            else:
                settings = self.settings.with_values(
                    "request", model=name, model_path="", offline=True
                )
            from rmcli.engine.remover import model_for

            width = heavy_width(model_for(settings), self.settings)  # unknown: UsageError
            found = Remover(settings=self.session_settings(settings, width))
            self._models[name] = found
            self.memory.estimate(name, weights_bytes(found.model), input_pixels(found.model))
        return found

    def session_settings(self, settings: Settings, width: int = 1) -> Settings:
        """The settings of the sessions behind requests: sized for ``width`` local slots."""
        return self.budget.slot_settings(settings, width)

    async def start(self) -> None:
        """Bind to the running loop (inference threads release slots to it); bound the
        session cache and follow its evictions."""
        self._loop = asyncio.get_running_loop()
        self._fetch_lock = asyncio.Lock()
        SESSIONS.bound(self.settings["serve_max_sessions"], self.settings["serve_session_ttl"])
        self._unsubscribe = SESSIONS.on_evict(self.memory.forget)

    def require_matting(self) -> None:
        """503 + Retry-After while pymatting's kernels are still being compiled."""
        reason = self.matting.unready()
        if reason:
            raise ServeError(503, reason, self.settings["serve_retry_after"], tag="unavailable")

    async def available(self, remover: Remover) -> None:
        """Return when ``remover``'s weights are here; else 400 (fetching not allowed) or 503 +
        Retry-After while its one background fetch runs (``serve_fetch_models``, ``--models``)."""
        name = remover.model.name
        if name in self._present:
            return
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, _weights_here, remover.model, remover.settings):
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

        model, settings = self.remover(name).model, self.remover(name).settings
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
                remover = self.remover(name)
            except RmcliError as exc:
                log.error("serve_models: %s", exc)
                continue
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, _weights_here, remover.model, remover.settings):
                self._present.add(name)
            else:
                await self.fetch(name)
            warm = self.settings["serve_warmup"] and self.executor == "local"
            if warm and name in self._present and name != self.default_model.name:
                try:
                    await self.warm_up(name)  # measures its memory before requests come
                except RmcliError as exc:
                    log.error("serve_models: %s: %s", name, exc)

    async def run(self, job: ImageRequest, deadline: float) -> ImageAnswer:
        """Cut out ``job`` before the loop time ``deadline``; ServeError on expected failures."""
        remover = self.remover(job.model)
        model = remover.model
        check_header(job.data, job.label, remover.settings["max_pixels"])  # before queueing
        await self.available(remover)
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
                body = await self.cut_out(job, remover)
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
        return ImageAnswer(body, MEDIA_TYPES[job.out_format], model.name)

    def _refuse_if_late(self, deadline: float, name: str) -> None:
        """503 now, not at the deadline, when the fair schedule cannot finish this request in
        time: its own model's queue, the other queues' share (see
        :meth:`FairScheduler.expected`), measured seconds per request of each model. It
        refuses only once every slot is taken and a measurement exists."""
        if not self.seconds(name) or not self.scheduler.slots or self.scheduler.free > 0:
            return
        expected = self.scheduler.expected(name, self._slot_seconds)
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

    async def cut_out(self, job: ImageRequest, remover: Remover) -> bytes:
        """On a slot (already acquired): decode and mask on the slot's thread, then compose
        and encode on the codec pool. The slot thread releases the slot."""
        loop = asyncio.get_running_loop()
        held = loop.run_in_executor(
            self.infer_pool, self._on_slot, remover, lambda: mask_request(remover, job)
        )
        image, mask = await _shielded(held)
        max_pixels = self.settings["max_pixels"]
        return await _shielded(
            loop.run_in_executor(self.codec_pool, finish_request, job, image, mask, max_pixels)
        )

    def _on_slot(self, remover: Remover, work: Callable[[], T]) -> T:
        """On an inference slot: ``work()``, measured (seconds and bytes); the slot is
        released when done."""
        name = remover.model.name
        try:
            done, seconds = run_measured(self.memory, remover, work)
            self.slot_done(seconds, name)
            return done
        finally:
            self._release_from_thread(name)

    def _release_from_thread(self, name: str) -> None:
        self._loop.call_soon_threadsafe(self._release, name)

    def _release(self, name: str) -> None:
        self.memory.release(name)
        self.scheduler.release(name)

    async def warm_up(self, name: str | None = None) -> float:
        """Build a model's session (None: the default's) and run it once, on a slot, measuring
        its memory; the seconds it took."""
        started = time.perf_counter()
        remover = self.remover(name)
        model = remover.model
        await self.scheduler.acquire(model.name)
        await _shielded(
            asyncio.get_running_loop().run_in_executor(
                self.infer_pool, self._on_slot, remover, lambda: warm(remover)
            )
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

    async def verify_weights(self) -> None:
        """Fetch (if allowed) and check the default model's weights, off the event loop."""
        from rmcli.engine.session import store_for

        model = self.default_model
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: store_for(self.settings).ensure(model.weights, model_name=model.name)
        )

    def evict_idle(self) -> None:
        """Drop the sessions idle for ``serve_session_ttl`` (called periodically)."""
        SESSIONS.evict_idle()

    async def close(self) -> None:
        self._unsubscribe()
        SESSIONS.bound(None, None)
        self.matting.stop()
        for task in list(self._fetches.values()):
            task.cancel()
        self.infer_pool.shutdown(wait=False, cancel_futures=True)
        self.codec_pool.shutdown(wait=False, cancel_futures=True)


FETCH_RETRY = 60.0  # seconds before a failed model fetch is tried again


def weights_bytes(model: Model) -> int:
    """The size of ``model``'s weights file where known (0: not known yet)."""
    weights = model.weights
    if weights.path:
        with contextlib.suppress(OSError):
            return os.path.getsize(weights.path)
    return weights.size or 0


def input_pixels(model: Model) -> int:
    width, height = model.input_size
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


async def _shielded(future: asyncio.Future) -> Any:
    """Await a thread's work; when cancelled, the thread still finishes (its slot is freed
    by the thread itself) and its result is dropped."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved"
        raise
