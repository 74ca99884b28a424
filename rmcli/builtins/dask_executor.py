"""dask: the batch runs on a Dask cluster, in chunks of files (``pip install 'rmcli[dask]'``).

The client resolves every setting once and ships the resolved values with each chunk; a
worker builds its session on its first chunk and reuses it (the process-wide session cache)
for every later chunk. The thread layout is resolved on the worker, for its ``nthreads``
cores (see :mod:`rmcli.engine.layout`). Importing this module does not import Dask.
"""

from __future__ import annotations

import importlib.util
import math
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.contracts.clock import Clock, untimed
from rmcli.contracts.executor import Executor
from rmcli.errors import RmcliError, UsageError
from rmcli.extras import pip_install
from rmcli.hookspecs import hookimpl

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.contracts.executor import Masker, Stop
    from rmcli.contracts.jobs import Job, Result
    from rmcli.contracts.output import OutputOptions

CHUNKS_PER_THREAD = 4  # enough chunks to balance uneven images and to lose little on worker loss
MAX_CHUNK = 32
CONNECT_TIMEOUT_S = 10.0
CONNECT_TIMEOUT = f"{CONNECT_TIMEOUT_S:.0f}s"


class DaskExecutor(Executor):
    name = "dask"
    summary = "On a Dask cluster (--scheduler ADDRESS), else a local cluster of this machine"
    serve_with = "rmcli.serve.dask_service:DaskInferenceService"

    def availability(self) -> tuple[bool, str]:
        if importlib.util.find_spec("distributed") is None:
            return False, f"needs dask.distributed: {pip_install('dask')}"
        return True, "dask.distributed is installed"

    def run(
        self,
        remover: Masker,
        jobs: Sequence[Job],
        options: OutputOptions,
        stop: Stop | None = None,
        clock: Clock = untimed,
    ) -> Iterator[tuple[int, Result]]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        from rmcli.contracts.jobs import Result

        if any(job.source is None or job.output is None for job in jobs):
            raise UsageError("the dask executor cannot read stdin or write stdout")
        todo = []
        for index, job in enumerate(jobs):
            if job.error:  # planning errors need no worker: report them here
                yield index, Result(job, f"{job.label}: {job.error}")
            else:
                todo.append((index, _portable(job)))
        if not todo:
            return
        settings = remover.settings
        with connect(settings) as client:
            threads = sum(client.nthreads().values()) or 1
            size = max(1, min(MAX_CHUNK, math.ceil(len(todo) / (threads * CHUNKS_PER_THREAD))))
            chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
            token = uuid.uuid4().hex[:8]
            futures = {
                client.submit(
                    run_chunk, settings, chunk, options, key=f"rmcli-{token}-chunk-{n}"
                ): chunk
                for n, chunk in enumerate(chunks)
            }
            try:
                for future in as_completed(futures):
                    chunk = futures[future]
                    try:
                        done = future.result()
                    except KilledWorker as exc:  # the chunk itself keeps killing workers
                        reason = f"the Dask workers processing it died ({exc})"
                        done = [(index, f"{job.label}: {reason}") for index, job in chunk]
                    except (CancelledError, OSError) as exc:  # scheduler lost or run cancelled
                        raise RmcliError(
                            f"the Dask run stopped: {type(exc).__name__}: {exc}"
                        ) from None
                    future.release()
                    for index, error in done:
                        yield index, Result(jobs[index], error)
                    if stop is not None and stop.is_set():
                        return  # the finally cancels the chunks not finished
            finally:
                with suppress(Exception):  # nothing left to cancel when the scheduler is gone
                    client.cancel(list(futures))


def _portable(job: Job) -> Job:
    """The job with absolute local paths, so a worker's working folder does not matter."""
    from dataclasses import replace

    def absolute(location: Any) -> Any:
        return location.absolute() if isinstance(location, Path) else location

    return replace(job, source=absolute(job.source), output=absolute(job.output))


@contextmanager
def connect(settings: Settings) -> Iterator[Any]:
    """A client of the scheduler in ``dask_scheduler``, else of a new local cluster.

    The local cluster has one single-threaded worker process per usable CPU.
    """
    from distributed import Client, LocalCluster

    address = settings["dask_scheduler"]
    if address:
        try:
            probe_scheduler(address, CONNECT_TIMEOUT_S)
            client = Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            source = settings.source("dask_scheduler")
            raise UsageError(
                f"cannot reach the Dask scheduler {address!r} ({source}): {exc}"
            ) from None
        with client:
            yield client
        return
    with LocalCluster(**local_cluster_options()) as cluster, Client(cluster) as client:
        yield client


def local_cluster_options() -> dict[str, Any]:
    """A local cluster of this machine: one single-threaded worker process per usable CPU,
    on loopback, its dashboard on a free port (8787 may be taken), quiet logs."""
    import logging

    from rmcli.cpus import usable_cpu_count

    return {
        "n_workers": usable_cpu_count(),
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "silence_logs": logging.ERROR,
    }


def probe_scheduler(address: str, timeout_s: float) -> None:
    """Connect to ``address`` and finish Dask's handshake within ``timeout_s``, or raise.

    ``Client(address, timeout=...)`` bounds only the TCP connect: a server that accepts the
    connection but never answers (a wrong port, an HTTP server) hangs it for minutes. This
    probe runs the same connect and handshake in its own event loop and thread, under a
    deadline that covers both; a TimeoutError or OSError says why.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def probe() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout_s), timeout_s)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="rmcli-dask-probe") as pool:
        try:
            pool.submit(asyncio.run, probe()).result()
        except TimeoutError:
            raise TimeoutError(f"no answer within {timeout_s:.0f} s") from None


def run_chunk(
    settings: Settings, chunk: list[tuple[int, Job]], options: OutputOptions
) -> list[tuple[int, str | None]]:
    """On a worker: process a chunk with the local runner; ``(index, error or None)`` each.

    Writes are atomic and deterministic, so a chunk that Dask runs again after a worker was
    lost rewrites the same whole files.
    """
    from distributed import get_worker

    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import run_local

    try:
        nthreads = get_worker().state.nthreads
    except ValueError:  # not on a worker (e.g. dask's synchronous scheduler)
        nthreads = 1
    remover = Remover(settings=settings, cores=nthreads)  # the layout of this worker's cores
    results = run_local(remover, [job for _, job in chunk], options)
    return [(index, result.error) for (index, _), result in zip(chunk, results, strict=True)]


@hookimpl
def register_executors(register):
    register(DaskExecutor())
