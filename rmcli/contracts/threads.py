"""The thread layout of one session: threads, execution mode, spinning, CPUs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ThreadLayout:
    """How one session uses the CPUs. Resolved once per session by :mod:`rmcli.engine.layout`;
    a backend may change it in :meth:`rmcli.Backend.adjust_layout`.

    ``None`` for a thread count, the execution mode or spinning means "ONNX Runtime's own
    default" (rembg's set-up). CPU ids are 0-based.
    """

    intra_threads: int | None
    inter_threads: int | None = 1
    execution_mode: str | None = "sequential"
    spinning: bool | None = True
    worker_cpus: tuple[tuple[int, ...], ...] = ()  # one group per ORT worker thread
    caller_cpus: tuple[int, ...] = ()  # where the calling thread is pinned (empty: nowhere)
    encode_threads: int = 1  # threads one image's encoder may use
    usable_cpus: int = 1  # affinity mask capped by the cgroup quota
    allowed_cpus: tuple[int, ...] = ()
    cgroup_cpu_limit: float | None = None
    intra_from: str = "cores"  # cores, binding, auto, setting, backend
    ignored: tuple[tuple[str, str], ...] = ()  # (setting, why) the backend does not honour

    def ignore(self, key: str, reason: str) -> ThreadLayout:
        """A copy noting that setting ``key`` does not apply, and why (the first reason wins)."""
        if any(known == key for known, _ in self.ignored):
            return self
        return replace(self, ignored=(*self.ignored, (key, reason)))

    def describe(self) -> dict[str, Any]:
        """The layout as plain values, for ``-v``, ``bench`` and JSON."""
        return {
            "intra_threads": _or_default(self.intra_threads),
            "inter_threads": _or_default(self.inter_threads),
            "execution_mode": _or_default(self.execution_mode),
            "spinning": _or_default(self.spinning),
            "worker_cpus": [list(g) for g in self.worker_cpus],
            "caller_cpus": list(self.caller_cpus),
            "encode_threads": self.encode_threads,
            "usable_cpus": self.usable_cpus,
            "allowed_cpus": list(self.allowed_cpus),
            "cgroup_cpu_limit": self.cgroup_cpu_limit,
            "intra_threads_from": self.intra_from,
        }


def _or_default(value: Any) -> Any:
    return "ONNX Runtime default" if value is None else value
