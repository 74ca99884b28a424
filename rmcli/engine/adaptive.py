"""Adaptive thread count for ``intra_threads = auto``: size the pool to the idle allowed cores.

The load is read from ``/proc/stat`` twice, ~150 ms apart, for exactly the CPUs this process
may use. ``/proc/loadavg`` is not used: it is a 1-minute damped average over the whole
machine (CPUs outside our cpuset included, and tasks blocked on I/O counted as load), so it
reacts far too slowly and to the wrong cores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

SAMPLE_SECONDS = 0.15


def read_cpu_times(stat: Path = Path("/proc/stat")) -> dict[int, tuple[int, int]]:
    """Per logical CPU: (idle ticks, total ticks) since boot; empty when unreadable."""
    times: dict[int, tuple[int, int]] = {}
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or not name[3:].isdigit():
            continue
        ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        times[int(name[3:])] = (idle, sum(ticks))
    return times


def idle_fractions(
    cpus: Sequence[int], seconds: float = SAMPLE_SECONDS, stat: Path = Path("/proc/stat")
) -> dict[int, float]:
    """How idle each of ``cpus`` was (0.0 busy .. 1.0 idle) over the next ``seconds``.

    A CPU that cannot be measured counts as idle (so a missing ``/proc`` means "use them all").
    """
    before = read_cpu_times(stat)
    time.sleep(seconds)
    after = read_cpu_times(stat)
    fractions = {}
    for cpu in cpus:
        if cpu not in before or cpu not in after:
            fractions[cpu] = 1.0
            continue
        idle = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        fractions[cpu] = min(1.0, max(0.0, idle / total)) if total > 0 else 1.0
    return fractions


def threads_for_idle(fractions: Sequence[float], limit: int) -> int:
    """Threads that fit in the idle capacity: the summed idle share, rounded, in 1..limit.

    One core fully busy and one idle gives 1; two cores each half busy give 1; two idle give 2.
    """
    return max(1, min(limit, round(sum(fractions))))


def auto_intra_threads(cpus: Sequence[int], limit: int | None = None) -> int:
    """The intra-op thread count for ``cpus``, measured now (cpu-pinned keeps it per session)."""
    chosen = sorted(cpus)
    limit = len(chosen) if limit is None else min(limit, len(chosen))
    return threads_for_idle(list(idle_fractions(chosen).values()), limit)
