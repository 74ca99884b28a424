"""``rmcli serve --executor dask``: the inferences run on Dask workers behind one front end.

The front end keeps everything a request meets before its inference: admission, the header
check, the per-model fair queue, the deadline, disconnects, metrics. Its K slots are the
cluster's worker threads, followed as workers join and leave. A job (the upload's bytes and
its options) goes to a worker, which decodes it, runs the model on a session it keeps warm
for its later jobs, composes and encodes; the front end answers with the bytes it gets back.

Each worker thread is one slot of ``intra_threads`` threads (default 1; Dask's ``nthreads``
counts cores), so size workers with ``dask worker --nthreads <cores>``. Each worker keeps its
sessions within its own memory budget (:class:`WorkerBudget`) and reports what it holds warm
with every answer; the front end routes each job by that (:meth:`DaskInferenceService.route`).
Importing this module imports neither Dask nor FastAPI: workers import it to run
:func:`run_job`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from rmcli.errors import UsageError
from rmcli.extras import pip_install
from rmcli.serve.http_errors import ServeError
from rmcli.serve.memory_budget import MemoryBudget, default_budget, mib
from rmcli.serve.scheduler import FairScheduler
from rmcli.serve.service import (
    ImageRequest,
    InferenceService,
    finish_request,
    input_pixels,
    mask_request,
    run_measured,
    warm,
    weights_bytes,
)
from rmcli.serve.slots import concurrent_callers

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.engine.remover import Remover

log = logging.getLogger("rmcli.serve")

CONNECT_TIMEOUT_S = 10.0
WATCH_PERIOD_S = 1.0
SCATTER_BYTES = 1 << 20  # larger uploads travel to a worker directly, not inside the task
T = TypeVar("T")
WorkerState = dict[str, Any]  # what a worker reports with each answer: see WorkerBudget.state


class DaskInferenceService(InferenceService):
    """:class:`InferenceService` whose inferences run on a Dask cluster (``dask_scheduler``, else a
    local cluster of one single-threaded worker process per usable core)."""

    executor = "dask"

    def __init__(self, settings: Settings) -> None:
        import importlib.util

        if importlib.util.find_spec("distributed") is None:
            raise UsageError(
                f"rmcli serve --executor dask needs dask.distributed: {pip_install('dask')}"
            )
        super().__init__(settings)
        self.address = settings["dask_scheduler"]
        if self.address:
            _probe(self.address, settings.source("dask_scheduler"))
        # slots arrive with the workers; each worker bounds its own sessions, not this budget
        self.scheduler = FairScheduler(0, self._core_seconds)
        self.memory.total, self.memory.source = 1 << 62, "dask: not applied on the front end"
        self.intra_threads = 0
        self.workers: dict[str, int] = {}  # worker: threads
        self.warm: dict[str, dict[str, int]] = {}  # worker: models it holds warm, their bytes
        self.budgets: dict[str, int] = {}  # worker: its memory budget
        self._running: dict[str, int] = {}  # worker: jobs routed to it, not answered yet
        self._refused: dict[str, dict[str, str]] = {}  # model: {worker: why it never fits}
        self.client: Any = None
        self._cluster: Any = None
        self._watch: asyncio.Task | None = None
        self._lost = ""
        self._warmed = False

    def describe(self) -> str:
        where = self.address or "a local cluster"
        return f"inferences on the Dask workers of {where}, one slot per worker thread"

    def session_settings(self, settings: Settings, width: int = 1) -> Settings:
        return settings  # each worker sizes its sessions for its own threads (worker_settings)

    def memory_report(self) -> dict[str, Any]:
        """Each worker's budget and what it holds, as its last answer reported (the front end
        holds no session)."""
        workers = {
            worker: {"bytes": self.budgets.get(worker, 0), "loaded": loaded}
            for worker, loaded in sorted(self.warm.items())
        }
        return {
            "bytes": min((w["bytes"] for w in workers.values()), default=0),
            "source": "each Dask worker's own (serve_memory_budget, else its memory)",
            "held": sum(sum(w["loaded"].values()) for w in workers.values()),
            "workers": workers,
        }

    def loaded(self) -> dict[str, int]:
        """Models loaded on some worker, and the most bytes a worker holds for each."""
        found: dict[str, int] = {}
        for loaded in self.warm.values():
            for model, size in loaded.items():
                found[model] = max(found.get(model, 0), size)
        return found

    def unavailable(self) -> str | None:
        where = self.address or "the local cluster"
        if self.client is None:
            return f"not connected to the Dask scheduler {where} yet"
        if self._lost or self.client.status != "running":
            return self._lost or f"lost the connection to the Dask scheduler {where} (reconnecting)"
        if not self.scheduler.slots:
            return f"no Dask workers connected to the Dask scheduler {where}"
        return None

    async def start(self) -> None:
        from distributed import Client, LocalCluster

        await super().start()
        if not self.address:
            from rmcli.builtins.dask_executor import local_cluster_options

            self._cluster = await LocalCluster(**local_cluster_options(), asynchronous=True)
            self.client = await Client(self._cluster, asynchronous=True)
        await self._follow_workers()  # connects to --scheduler (and keeps trying if it fails)
        self._watch = asyncio.create_task(self._watch_workers())

    async def _connect(self) -> Any:
        from distributed import Client

        return await Client(self.address, asynchronous=True, timeout=f"{CONNECT_TIMEOUT_S:.0f}s")

    async def _follow_workers(self) -> None:
        """Resize the slots to the cluster's worker threads; log joins and departures.
        A client that gave up reconnecting is replaced, so a restarted scheduler is found."""
        try:
            if self.address and (self.client is None or self.client.status == "closed"):
                self.client = await self._connect()
            workers = await asyncio.wait_for(self.client.nthreads(), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            if not self._lost:
                self._lost = (
                    f"the Dask scheduler {self.address or 'of the local cluster'} does not "
                    f"answer: {type(exc).__name__}: {exc}"
                )
                log.warning("%s", self._lost)
                self.scheduler.resize(0)
                self.workers = {}
            return
        if self._lost:
            log.info("the Dask scheduler answers again")
            self._lost = ""
        workers = dict(workers)
        if workers != self.workers:
            joined = workers.keys() - self.workers.keys()
            left = self.workers.keys() - workers.keys()
            for address in sorted(joined):
                log.info("Dask worker %s joined (%d threads)", address, workers[address])
            for address in sorted(left):
                log.warning("Dask worker %s left", address)
                self.warm.pop(address, None)
                self.budgets.pop(address, None)
                self._running.pop(address, None)
                for refused in self._refused.values():
                    refused.pop(address, None)
            self.workers = workers
            self.scheduler.resize(sum(workers.values()))
            if joined and self._warmed:  # the start-up warm-up is over: warm newcomers now
                asyncio.ensure_future(self._warm(sorted(joined))).add_done_callback(_ignored)

    async def _watch_workers(self) -> None:
        while True:
            await asyncio.sleep(WATCH_PERIOD_S)
            try:
                await self._follow_workers()
            except Exception as exc:  # noqa: BLE001 - keep following; say what went wrong
                log.warning("following the Dask workers: %s: %s", type(exc).__name__, exc)

    def route(self, name: str) -> str | None:
        """The worker for the next job of model ``name`` (None: none free, Dask chooses).

        The candidates are the workers with a thread free (counting the jobs this front end
        has routed to each) that have not refused ``name`` as larger than their memory budget.
        The first wins by: holds ``name`` warm (as its last answer reported), then fewest jobs
        running, then fewest bytes held, so that a model warm everywhere leaves free the
        worker that also holds a heavier one, and a cold model goes where the least is held.
        The job is submitted with ``workers=[it], allow_other_workers=True``: Dask runs it
        there, or on another worker if that one dies or leaves. ServeError 503 when every
        worker refused ``name``."""
        refused = self._refused.get(name, {})
        if refused and self.workers and all(w in refused for w in self.workers):
            raise ServeError(503, next(iter(refused.values())), tag="memory")
        free = [
            w for w, n in self.workers.items() if self._running.get(w, 0) < n and w not in refused
        ]

        def rank(worker: str) -> tuple[bool, int, int, str]:
            held = self.warm.get(worker, {})
            return name not in held, self._running.get(worker, 0), sum(held.values()), worker

        return min(free, key=rank, default=None)

    async def cut_out(self, job: ImageRequest, remover: Remover) -> bytes:
        """On a slot (already acquired): the job runs on a worker (:meth:`route`); the slot is
        released when its result (or failure) is back. A worker that refuses the model as too
        large for its budget is not asked again, and the job tries another. A worker that dies
        mid-job makes Dask run it again elsewhere; when Dask gives up, or the scheduler is
        lost, 503 + Retry-After with the reason. A request that gives up cancels its task."""
        from concurrent.futures import CancelledError as TaskCancelled

        from distributed.scheduler import KilledWorker

        started = time.perf_counter()
        name = remover.model.name
        retry = self.settings["serve_retry_after"]
        try:
            payload: Any = job
            while True:
                worker = self.route(name)
                if payload is job and len(job.data) + len(job.background or b"") > SCATTER_BYTES:
                    where = [worker] if worker else None
                    payload = await self.client.scatter(job, hash=False, workers=where)
                try:
                    body, timings = await self._submit(remover.settings, payload, name, worker)
                    break
                except ServeError as exc:
                    if exc.tag != "memory" or worker is None:
                        raise
                    log.warning("%s", exc)
                    self._refused.setdefault(name, {})[worker] = str(exc)
            self.slot_done(time.perf_counter() - started, name)
            job.timings.update(timings)
            return body
        except KilledWorker:
            raise ServeError(
                503,
                f"{job.label}: the Dask worker running it died, and Dask gave up running it "
                f"again (the scheduler's distributed.scheduler.allowed-failures); retry after "
                f"{retry} s",
                retry,
                tag="unavailable",
            ) from None
        except TaskCancelled as exc:
            why = getattr(exc, "reason", "") or type(exc).__name__
            raise ServeError(
                503,
                f"{job.label}: the Dask cluster dropped it before the answer came ({why}); "
                f"retry after {retry} s",
                retry,
                tag="unavailable",
            ) from None
        except OSError as exc:  # CommClosedError included
            raise ServeError(
                503,
                f"{job.label}: the connection to the Dask scheduler was lost before the answer "
                f"came ({type(exc).__name__}); retry after {retry} s",
                retry,
                tag="unavailable",
            ) from None
        finally:
            self.scheduler.release(name)

    async def _submit(
        self, settings: Settings, payload: Any, name: str, worker: str | None
    ) -> tuple[bytes, dict[str, float]]:
        """Run one job on ``worker`` (None: Dask's choice); learn what the worker holds."""
        key = f"rmcli-serve-{name}-{uuid.uuid4().hex}"
        where: dict[str, Any] = {}
        if worker is not None:
            where = {"workers": [worker], "allow_other_workers": True}
            self._running[worker] = self._running.get(worker, 0) + 1
        future = self.client.submit(run_job, settings, payload, key=key, pure=False, **where)
        try:
            body, timings, state = await future
        except asyncio.CancelledError:
            asyncio.ensure_future(self.client.cancel([future])).add_done_callback(_ignored)
            raise
        finally:
            if worker in self._running:
                self._running[worker] = max(0, self._running[worker] - 1)
        self._learn(state)
        return body, timings

    def _learn(self, state: WorkerState) -> None:
        """Take in what a worker reported it holds warm; log when that changes."""
        worker, loaded = state["worker"], state["loaded"]
        before = self.warm.get(worker, {})
        self.warm[worker] = loaded
        self.budgets[worker] = state["budget"]
        if loaded.keys() != before.keys():
            held = ", ".join(f"{model} ({mib(size)})" for model, size in loaded.items())
            log.info(
                "Dask worker %s holds warm: %s; memory budget %s",
                worker,
                held or "nothing",
                mib(state["budget"]),
            )

    async def warm_up(self) -> float:
        """Build and run the default model's session on every worker connected now (workers
        that join later are warmed up as they join)."""
        started = time.perf_counter()
        self._warmed = True
        await self._warm(list(self.workers))
        return time.perf_counter() - started

    async def _warm(self, workers: list[str]) -> None:
        if not workers or self.client is None:
            return
        from concurrent.futures import CancelledError as TaskCancelled

        from distributed.scheduler import KilledWorker

        settings = self.remover(None).settings
        futures = [  # loose: a worker that dies meanwhile leaves no task waiting for it
            self.client.submit(
                warm_worker, settings, workers=[address], allow_other_workers=True, pure=False
            )
            for address in workers
        ]
        try:
            answers = await self.client.gather(futures)
        except (KilledWorker, TaskCancelled, OSError) as exc:  # requests will say why
            log.warning("warm-up on the Dask workers: %s: %s", type(exc).__name__, exc)
            return
        for _, state in answers:
            self._learn(state)
        threads = [t for t in (*(t for t, _ in answers), self.intra_threads) if t]
        self.intra_threads = min(threads, default=0)
        log.info("warm-up: %s on %d Dask worker(s)", self.default_model.name, len(workers))

    async def verify_weights(self) -> None:
        """Nothing here: each worker fetches and verifies the weights it runs."""

    def evict_idle(self) -> None:
        """Each worker bounds its own sessions (its :class:`WorkerBudget`,
        ``serve_max_sessions``, ``serve_session_ttl``)."""

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.client is not None:
            await self.client.close()
        if self._cluster is not None:
            await self._cluster.close()
        await super().close()


def _ignored(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # a cancel that failed (scheduler gone) is no news


def _probe(address: str, source: str) -> None:
    """Refuse, in one line, a scheduler address that does not answer Dask's handshake."""
    from rmcli.builtins.dask_executor import probe_scheduler

    try:
        probe_scheduler(address, CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler {address!r} ({source}): {exc}") from None


# On the workers.

_removers: dict[tuple, Remover] = {}
_removers_lock = threading.Lock()


def worker_settings(settings: Settings, threads: int) -> Settings:
    """``settings`` for a worker running ``threads`` jobs at once: ``intra_threads`` 1 unless
    set, and what :func:`concurrent_callers` adds (no spinning, OpenVINO streams)."""
    if not settings.given("intra_threads"):
        settings = settings.with_values("serve: one Dask worker thread per slot", intra_threads=1)
    return concurrent_callers(settings, threads)


def _remover(settings: Settings) -> Remover:
    """This worker's remover for ``settings`` (made once); its sessions live in the worker's
    session cache, bounded as the front end's would be (``serve_max_sessions``,
    ``serve_session_ttl``), idle ones dropped."""
    from rmcli.engine.remover import Remover
    from rmcli.engine.session import SESSIONS

    key = (settings["model"], settings["model_path"], settings["backend"], settings.session_key())
    with _removers_lock:
        found = _removers.get(key)
        if found is None:
            from distributed import get_worker

            local = worker_settings(settings, get_worker().state.nthreads)
            found = _removers[key] = Remover(settings=local)
            SESSIONS.bound(settings["serve_max_sessions"], settings["serve_session_ttl"])
    SESSIONS.evict_idle()
    return found


class WorkerBudget:
    """One worker's memory budget: :class:`MemoryBudget` over the worker's own sessions.

    Its total is ``serve_memory_budget`` when set (each worker gets the same figure), else
    :func:`default_budget` of the worker's own cgroup or memory. Each model's session and one
    inference are measured on the worker as the local service measures them; idle sessions
    are evicted least recently used first to make room. A model that can never fit is
    refused (ServeError 503, tag ``memory``); a run that does not fit next to the runs in
    flight waits for one to end, at most ``serve_deadline`` seconds."""

    def __init__(self, arena: bool) -> None:
        from rmcli.engine.session import SESSIONS

        self.default = default_budget()
        self.memory = MemoryBudget(*self.default, SESSIONS.drop, arena=arena)
        SESSIONS.on_evict(self.memory.forget)
        self._room = threading.Condition()

    def configure(self, settings: Settings) -> None:
        total = settings["serve_memory_budget"]
        source = settings.source("serve_memory_budget") if total else ""
        self.memory.total, self.memory.source = (total, source) if total else self.default

    def run(self, remover: Remover, wait_s: float, work: Callable[[], T]) -> T:
        """``work()`` on ``remover``'s session once its model fits, measuring its bytes."""
        name = remover.model.name
        self._admit(remover, wait_s)
        try:
            return run_measured(self.memory, remover, work)[0]
        finally:
            with self._room:
                self.memory.release(name)
                self._room.notify_all()

    def _admit(self, remover: Remover, wait_s: float) -> None:
        model = remover.model
        self.memory.estimate(model.name, weights_bytes(model), input_pixels(model))
        too_large = self.memory.too_large(model.name)
        if too_large:
            self.memory.evict(model.name, "it does not fit")
            raise ServeError(503, f"Dask worker {_address()}: {too_large}", tag="memory")
        deadline = time.monotonic() + wait_s
        with self._room:
            while not self.memory.reserve(model.name):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServeError(
                        503,
                        f"Dask worker {_address()}: model {model.name} did not fit next to the "
                        f"inferences running there within {wait_s:g} s (serve_deadline; "
                        f"{self.memory.describe()})",
                        tag="deadline",
                    )
                self._room.wait(left)

    def state(self) -> WorkerState:
        """What the front end routes by: this worker, its loaded models and their bytes."""
        return {"worker": _address(), "loaded": self.memory.loaded(), "budget": self.memory.total}


_budget: WorkerBudget | None = None


def worker_budget(settings: Settings) -> WorkerBudget:
    """This worker's :class:`WorkerBudget` (made once), set to ``settings``' total."""
    global _budget
    with _removers_lock:
        if _budget is None:
            _budget = WorkerBudget(arena=bool(settings.get("cpu_mem_arena", True)))
        _budget.configure(settings)
        return _budget


def _address() -> str:
    from distributed import get_worker

    return str(get_worker().address)


def run_job(settings: Settings, job: ImageRequest) -> tuple[bytes, dict[str, float], WorkerState]:
    """On a worker: the job's encoded answer, the seconds of its stages, the worker's state."""
    remover = _remover(settings)
    budget = worker_budget(settings)
    image, mask = budget.run(
        remover, settings["serve_deadline"], lambda: mask_request(remover, job)
    )
    body = finish_request(job, image, mask, remover.settings["max_pixels"])
    return body, job.timings, budget.state()


def warm_worker(settings: Settings) -> tuple[int, WorkerState]:
    """On a worker: build and run the session once; its intra-op threads, the worker's state.
    A model that cannot fit is logged here; its requests get 503 with the reason."""
    remover = _remover(settings)
    budget = worker_budget(settings)
    try:
        budget.run(remover, settings["serve_deadline"], lambda: warm(remover))
    except ServeError as exc:
        log.error("%s", exc)
    return remover.layout.intra_threads or 0, budget.state()
