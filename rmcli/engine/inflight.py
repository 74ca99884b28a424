"""The local batch runner: several images in flight around one shared session.

Each image is handled from start to end by :func:`rmcli.engine.runner.process` on one of
``inflight`` worker threads, so while one image is in inference the others are being decoded,
pre-processed, post-processed or encoded (Pillow, numpy, zlib and ONNX Runtime release the
GIL). Inference itself runs one image at a time on all the session's threads: on this kind of
machine two concurrent runs are no faster than one after the other, and each run in flight
costs the model's whole activation memory again (u2netp: about 280 MB).

Memory stays flat on any batch size: at most ``inflight`` images are decoded at once, and
jobs are taken from the input only a few at a time. Results come out in input order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from rmcli.contracts.clock import Clock, untimed
from rmcli.contracts.jobs import Job, Result

LOOKAHEAD = 2  # jobs queued per worker: a slow image does not leave the other workers idle
WAKE_S = 0.1  # how often a thread waiting for a result wakes to run Python's signal handlers


def gated(clock: Clock, gates: dict[str, threading.Semaphore]) -> Clock:
    """``clock`` that also holds the stage's gate (if it has one) while a stage runs.

    Waiting for the gate is not counted in the stage's time.
    """

    @contextmanager
    def stage(name: str) -> Iterator[None]:
        gate = gates.get(name)
        if gate is None:
            with clock(name):
                yield
            return
        with gate, clock(name):
            yield

    return stage


def run_pipelined(
    handle: Callable[[Job, Clock], Result | None],
    jobs: Iterable[Job],
    stop: threading.Event | None = None,
    *,
    inflight: int = 2,
    clock: Clock = untimed,
) -> Iterator[Result]:
    """``handle(job, clock)`` for every job, ``inflight`` at a time; results in input order.

    The inference stage is gated: one image at a time. Once ``stop`` is set no further job
    is started; the ones already started finish. ``handle`` returning None means the job did
    not run to its end (aborted): nothing is yielded for it.
    """
    timed = gated(clock, {"inference": threading.Semaphore(1)})

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def one(job: Job) -> Result | None:
        if stopped():
            return None  # never started
        return handle(job, timed)

    if inflight <= 1:  # one image at a time, in this thread
        for job in jobs:
            if stopped():
                return
            result = one(job)
            if result is not None:
                yield result
        return

    remaining = iter(jobs)
    pending: deque[Future[Result | None]] = deque()
    pool = ThreadPoolExecutor(inflight, thread_name_prefix="rmcli-image")

    def top_up() -> None:
        while len(pending) < inflight * LOOKAHEAD and not stopped():
            job = next(remaining, None)
            if job is None:
                return
            pending.append(pool.submit(one, job))

    try:
        top_up()
        while pending:
            future = pending.popleft()
            if stopped():  # jobs not picked up yet never start; started ones still finish
                for queued in pending:
                    queued.cancel()
            if future.cancelled():
                continue
            result = awaited(future)
            if result is None:  # stopped before it started
                continue
            top_up()
            yield result
    finally:
        for queued in pending:
            queued.cancel()
        pool.shutdown(wait=False)


def awaited(future: Future[Result | None]) -> Result | None:
    """``future.result()``, waking every ``WAKE_S`` seconds. The kernel may hand Ctrl-C to any
    thread (an inference or encoding thread); Python runs its handler only in the main thread,
    and only once that thread runs Python code, so a main thread asleep in one long wait would
    see the signal only after the image (a whole clip) was done."""
    while True:
        try:
            return future.result(timeout=WAKE_S)
        except TimeoutError:
            continue
