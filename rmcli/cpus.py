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


CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def cgroup_cpu_limit(root: Path | None = None, self_cgroup: Path | None = None) -> float | None:
    """CPUs granted by the cgroup quotas that apply to this process, or None when unlimited.

    This process's cgroups are read from ``/proc/self/cgroup`` (``self_cgroup``): for cgroup v2
    (``0::/path``) every ``cpu.max`` from its own folder up to ``root``; for cgroup v1 (the
    ``cpu`` controller's line) every ``cpu.cfs_quota_us / cpu.cfs_period_us`` along its path
    under the ``cpu`` mount. The tightest limit along the path wins: a child cgroup made by
    systemd, Slurm or Kubernetes may be tighter than its parents, or the other way round.
    ORT ignores quotas when it picks threads.
    """
    root = CGROUP_ROOT if root is None else root
    limits: list[float] = []
    v2_path, v1_path = _own_cgroups(SELF_CGROUP if self_cgroup is None else self_cgroup)
    for folder in _path_up(root, v2_path):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and int(period) > 0:
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
    mounts = [root / name for name in V1_CPU_MOUNTS if (root / name).is_dir()]
    for mount in mounts[:1]:  # the other names are usually links to the same mount
        for folder in _path_up(mount, v1_path):
            try:
                quota = int((folder / "cpu.cfs_quota_us").read_text())
                period = int((folder / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                limits.append(quota / period)
    return min(limits) if limits else None


def _path_up(top: Path, relative: str) -> list[Path]:
    """``top/relative`` and each of its parents up to ``top`` itself (missing ones included:
    inside a container the path may name the host's hierarchy above the visible root)."""
    parts = [p for p in relative.split("/") if p and p not in (".", "..")]
    return [top.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _own_cgroups(self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup v2 path and cgroup v1 ``cpu`` controller path ('' if unknown)."""
    v2 = v1 = ""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path.strip()
        elif "cpu" in controllers.split(","):
            v1 = path.strip()
    return v2, v1


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


def check_binding(text: str, allowed: list[int]) -> list[int]:
    """The CPUs of a ``cpu_binding`` list, all of them ones this process may use.

    A ValueError says what is wrong.
    """
    try:
        cpus = parse_cpu_list(text)
    except ValueError as exc:
        raise ValueError(f"is not a CPU list like 0-3,8: {exc}") from None
    outside = sorted(set(cpus) - set(allowed))
    if outside:
        raise ValueError(
            f"names CPUs {format_cpus(outside)} outside the ones this process may use "
            f"({format_cpus(allowed)})"
        )
    return cpus


def format_cpus(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    parts: list[tuple[int, int]] = []
    for cpu in sorted(cpus):
        if parts and parts[-1][1] == cpu - 1:
            parts[-1] = (parts[-1][0], cpu)
        else:
            parts.append((cpu, cpu))
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in parts)


AFFINITY_ENTRY = "session.intra_op_thread_affinities"


def split_binding(cpus: list[int], threads: int) -> list[list[int]]:
    """Share ``cpus`` among ``threads`` threads in contiguous groups, first groups larger.

    ``split_binding([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]``. Needs ``threads <= len(cpus)``.
    """
    size, extra = divmod(len(cpus), threads)
    groups, start = [], 0
    for index in range(threads):
        end = start + size + (1 if index < extra else 0)
        groups.append(cpus[start:end])
        start = end
    return groups


def affinity_entry(worker_groups: list[list[int]]) -> str:
    """ONNX Runtime's intra-op affinity string: one group per worker, 1-based CPU ids.

    ``affinity_entry([[1], [2, 3]]) == "2;3,4"``. The calling thread is never listed:
    ORT does not pin it.
    """
    return ";".join(",".join(str(cpu + 1) for cpu in group) for group in worker_groups)


def check_affinity_entry(text: str, intra_threads: int, allowed: list[int]) -> list[list[int]]:
    """Validate an affinity string and return its groups as 0-based CPU lists.

    ONNX Runtime reports a bad string with a misleading "EP Error ... falling back" message,
    so check it first: exactly ``intra_threads - 1`` groups separated by ``;``, each a comma list
    of 1-based CPU ids or ``a-b`` ranges, every CPU one this process may use.
    A ValueError says what is wrong.
    """
    groups = text.split(";")
    if intra_threads < 2:
        raise ValueError(f"needs intra_op_num_threads >= 2 (it is {intra_threads})")
    if len(groups) != intra_threads - 1:
        raise ValueError(
            f"has {len(groups)} group(s) but intra_op_num_threads={intra_threads} needs "
            f"{intra_threads - 1} (one per worker; the calling thread is not listed)"
        )
    result = []
    for group in groups:
        try:
            ids = parse_cpu_list(group)
        except ValueError as exc:
            raise ValueError(f"group {group!r} {exc}") from None
        if 0 in ids:
            raise ValueError(f"group {group!r} has CPU id 0 (ids are 1-based: CPU 0 is '1')")
        cpus = [i - 1 for i in ids]
        outside = sorted(set(cpus) - set(allowed))
        if outside:
            raise ValueError(
                f"group {group!r} names CPUs {outside} (0-based) outside the ones this process "
                f"may use: {allowed}"
            )
        result.append(cpus)
    return result
