"""Per-session performance records: how many images, how long each took, how much CPU."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
