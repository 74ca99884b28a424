"""``rmcli remove --stats``: time per stage, wall time, images per second and peak memory."""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")

_active: BatchStats | None = None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (``getrusage`` ``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


@dataclass(frozen=True)
class StatsReport:
    """Totals for one batch; ``stage_seconds`` add up the time each stage took per image
    (stages of different images overlap in time, so their sum may exceed ``wall_seconds``)."""

    images: int
    failed: int
    wall_seconds: float
    stage_seconds: dict[str, float]
    peak_rss_bytes: int

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
            )


@contextmanager
def collecting(stats: BatchStats) -> Iterator[BatchStats]:
    """While active, local batches (:func:`rmcli.batch.run_local`) time their stages into
    ``stats``."""
    global _active
    previous, _active = _active, stats
    try:
        yield stats
    finally:
        _active = previous


def active_clock():
    """The stage clock of the stats being collected, or one that times nothing."""
    from rmcli.pipeline import untimed

    return _active.stage if _active is not None else untimed
