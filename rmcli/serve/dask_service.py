"""``rmcli serve --executor dask``: the inferences run on Dask workers behind one front end.

The front end keeps everything a request meets before its inference: admission, the header
check, the per-model fair queue, the deadline, disconnects, metrics. Its K slots are the
cluster's worker threads, followed as workers join and leave. A job (the upload's bytes and
its options) goes to a worker, which decodes it, runs the model on a session it keeps warm
for its later jobs, composes and encodes; the front end answers with the bytes it gets back.

Each worker thread is one slot of ``intra_threads`` threads (default 1; Dask's ``nthreads``
counts cores), so size workers with ``dask worker --nthreads <cores>``. Importing this module
imports neither Dask nor FastAPI: workers import it to run :func:`run_job`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from rmcli.errors import UsageError
from rmcli.extras import pip_install
from rmcli.serve.http_errors import ServeError
from rmcli.serve.scheduler import FairScheduler
from rmcli.serve.service import (
    ImageRequest,
    InferenceService,
    finish_request,
    mask_request,
    warm,
)
from rmcli.serve.slots import concurrent_callers

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.engine.remover import Remover

log = logging.getLogger("rmcli.serve")

CONNECT_TIMEOUT_S = 10.0
WATCH_PERIOD_S = 1.0
SCATTER_BYTES = 1 << 20  # larger uploads travel to a worker directly, not inside the task


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
        self.workers: dict[str, int] = {}
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

    async def cut_out(self, job: ImageRequest, remover: Remover) -> bytes:
        """On a slot (already acquired): the job runs on a worker; the slot is released when
        its result (or failure) is back. A request that gives up cancels its task."""
        from concurrent.futures import CancelledError as TaskCancelled

        from distributed.scheduler import KilledWorker

        started = time.perf_counter()
        model, settings = remover.model, remover.settings
        key = f"rmcli-serve-{model.name}-{uuid.uuid4().hex}"
        try:
            payload: Any = job
            if len(job.data) + len(job.background or b"") > SCATTER_BYTES:
                payload = await self.client.scatter(job, hash=False)
            future = self.client.submit(run_job, settings, payload, key=key, pure=False)
            try:
                body, timings = await future
            except asyncio.CancelledError:
                asyncio.ensure_future(self.client.cancel([future])).add_done_callback(_ignored)
                raise
            self.slot_done(time.perf_counter() - started, model.name)
            job.timings.update(timings)
            return body
        except KilledWorker as exc:
            raise ServeError(
                503,
                f"{job.label}: the Dask workers running it died ({exc})",
                self.settings["serve_retry_after"],
            ) from None
        except (TaskCancelled, OSError):
            raise ServeError(
                503,
                f"{job.label}: the connection to the Dask scheduler was lost before the "
                "answer came",
                self.settings["serve_retry_after"],
            ) from None
        finally:
            self.scheduler.release(model.name)

    async def warm_up(self) -> float:
        """Build and run the default model's session on every worker connected now (workers
        that join later warm up on their first job)."""
        started = time.perf_counter()
        self._warmed = True
        await self._warm(list(self.workers))
        return time.perf_counter() - started

    async def _warm(self, workers: list[str]) -> None:
        if not workers or self.client is None:
            return
        settings = self.remover(None).settings
        futures = [
            self.client.submit(
                warm_worker, settings, workers=[address], allow_other_workers=False, pure=False
            )
            for address in workers
        ]
        threads = [t for t in (*await self.client.gather(futures), self.intra_threads) if t]
        self.intra_threads = min(threads, default=0)
        log.info("warm-up: %s on %d Dask worker(s)", self.default_model.name, len(workers))

    async def verify_weights(self) -> None:
        """Nothing here: each worker fetches and verifies the weights it runs."""

    def evict_idle(self) -> None:
        """Each worker bounds its own sessions (``serve_max_sessions``, ``serve_session_ttl``)."""

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


def run_job(settings: Settings, job: ImageRequest) -> tuple[bytes, dict[str, float]]:
    """On a worker: the job's encoded answer and the seconds of its stages."""
    remover = _remover(settings)
    image, mask = mask_request(remover, job)
    return finish_request(job, image, mask, remover.settings["max_pixels"]), job.timings


def warm_worker(settings: Settings) -> int:
    """On a worker: build and run the session once; its intra-op threads."""
    remover = _remover(settings)
    warm(remover)
    return remover.layout.intra_threads or 0
