"""Performance records: a batch's time per stage (``--stats``) and a session's latencies."""

from __future__ import annotations

import resource
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rmcli.contracts.clock import STAGES


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far: Linux's ``VmHWM``, else ``ru_maxrss``.

    (On Linux ``ru_maxrss`` also counts the parent's memory when it forked this process.)
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def rss_bytes() -> int:
    """This process's resident memory now (0 where ``/proc/self/statm`` does not exist)."""
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class SessionMemory:
    """What building a session cost: the weights file, and the resident memory before and
    after the build (its peak is the process's peak so far, when the build ended)."""

    weights_bytes: int
    before_bytes: int
    after_bytes: int
    build_peak_bytes: int


_last_session: list[SessionMemory] = []


def record_session_memory(memory: SessionMemory) -> None:
    """Remember the memory of the session just built (``--stats`` reports the latest)."""
    _last_session[:] = [memory]


def last_session_memory() -> SessionMemory | None:
    """The memory of the session built last in this process, if any."""
    return _last_session[0] if _last_session else None


@dataclass(frozen=True)
class StatsReport:
    """Totals for one batch; ``stage_seconds`` add up the time each stage took per image
    (stages of different images overlap in time, so their sum may exceed ``wall_seconds``)."""

    images: int
    failed: int
    wall_seconds: float
    stage_seconds: dict[str, float]
    peak_rss_bytes: int
    session_memory: SessionMemory | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The human-readable report, one line per figure."""
        done = max(1, self.images)
        lines = [f"stats: {self.images} image(s), {self.failed} failed"]
        for stage in STAGES:
            total = self.stage_seconds.get(stage, 0.0)
            lines.append(f"  {stage:<12} {total:8.3f} s  {total / done * 1000:8.1f} ms/image")
        lines.append(f"  {'wall':<12} {self.wall_seconds:8.3f} s")
        lines.append(f"  {'throughput':<12} {self.images_per_second:8.2f} images/s")
        lines.append(f"  {'peak memory':<12} {self.peak_rss_bytes / 2**20:8.1f} MiB (max RSS)")
        memory = self.session_memory
        if memory is not None and memory.after_bytes:
            mib = 2**20
            grown = (memory.after_bytes - memory.before_bytes) / mib
            lines.append(f"  {'  weights':<12} {memory.weights_bytes / mib:8.1f} MiB (file)")
            lines.append(
                f"  {'  session':<12} {grown:8.1f} MiB (resident after building it, weights "
                f"included; {memory.build_peak_bytes / mib:.1f} MiB peak while building)"
            )
            if self.peak_rss_bytes > memory.build_peak_bytes:
                images = (self.peak_rss_bytes - memory.after_bytes) / mib
                lines.append(f"  {'  images':<12} {images:8.1f} MiB (peak above the session)")
        return lines


class BatchStats:
    """Thread-safe stage timer for a batch: ``with stats.stage("decode"): ...``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds = dict.fromkeys(STAGES, 0.0)
        self._images = 0
        self._failed = 0
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to stage ``name``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._seconds[name] = self._seconds.get(name, 0.0) + elapsed

    def count(self, failed: bool) -> None:
        """Count one finished image."""
        with self._lock:
            self._images += 1
            self._failed += failed

    def report(self) -> StatsReport:
        with self._lock:
            return StatsReport(
                images=self._images,
                failed=self._failed,
                wall_seconds=time.perf_counter() - self._started,
                stage_seconds=dict(self._seconds),
                peak_rss_bytes=peak_rss_bytes(),
                session_memory=last_session_memory(),
            )


KEEP_LATENCIES = 1000  # median and p90 are over the most recent images


@dataclass(frozen=True)
class SessionStats:
    """A snapshot of one session's records (times in seconds).

    ``cpu_seconds`` is process CPU time (all threads, ONNX Runtime's pool included) spent
    while images were being processed; calls that overlap in time share it.
    """

    model: str
    backend: str
    count: int
    total_seconds: float
    mean_seconds: float
    median_seconds: float
    p90_seconds: float
    cpu_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.count / self.total_seconds if self.total_seconds > 0 else 0.0


def percentile(values: list[float], share: float) -> float:
    """The ``share`` (0..1) percentile with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * share
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Recorder:
    """Thread-safe latency and CPU-time records for one session."""

    def __init__(self, model: str, backend: str) -> None:
        self.model = model
        self.backend = backend
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every record."""
        with self._lock:
            self._count = 0
            self._total = 0.0
            self._cpu = 0.0
            self._recent: deque[float] = deque(maxlen=KEEP_LATENCIES)

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Record the wall and process CPU time of the ``with`` block, if it succeeds."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with self._lock:
            self._count += 1
            self._total += wall
            self._cpu += cpu
            self._recent.append(wall)

    def snapshot(self) -> SessionStats:
        with self._lock:
            recent = list(self._recent)
            count, total, cpu = self._count, self._total, self._cpu
        return SessionStats(
            model=self.model,
            backend=self.backend,
            count=count,
            total_seconds=total,
            mean_seconds=total / count if count else 0.0,
            median_seconds=statistics.median(recent) if recent else 0.0,
            p90_seconds=percentile(recent, 0.9),
            cpu_seconds=cpu,
        )
