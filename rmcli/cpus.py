"""What CPUs this process may use: affinity mask, cgroup quota, and CPU list parsing."""

from __future__ import annotations

import math
import os
from pathlib import Path


def allowed_cpus() -> list[int]:
    """Logical CPUs in this process's affinity mask (the container's cpuset), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup quota (``cpu.max`` or v1 CFS), or None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpu_count() -> int:
    """How many threads this process can keep busy: the affinity mask capped by the cgroup quota."""
    count = len(allowed_cpus())
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def parse_cpu_list(text: str) -> list[int]:
    """Parse ``'0-3,8'`` into ``[0, 1, 2, 3, 8]``; a ValueError says what is wrong."""
    cpus: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"{part!r} is not a CPU number or range like 0-3")
        start, end = int(lo), int(hi) if sep else int(lo)
        if end < start:
            raise ValueError(f"range {part!r} goes backwards")
        cpus.extend(range(start, end + 1))
    if not cpus:
        raise ValueError("names no CPU")
    if len(set(cpus)) != len(cpus):
        raise ValueError("names a CPU twice")
    return cpus
