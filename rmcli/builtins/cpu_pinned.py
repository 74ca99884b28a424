"""cpu-pinned: explicit thread counts sized to the CPUs this process may really use.

rmcli's own thread layout (see :mod:`rmcli.engine.layout`) is this backend's: intra-op threads
= the usable cores (affinity mask capped by the cgroup quota) or ``intra_threads``, optional
pinning from ``cpu_binding``, spinning that stops after each run. So it adjusts nothing.
"""

from __future__ import annotations

from rmcli.contracts.backend import Backend
from rmcli.hookspecs import hookimpl


class CpuPinned(Backend):
    """The default: intra-op threads = usable cores (affinity mask, cgroup quota), never 0."""

    name = "cpu-pinned"
    summary = "CPU, explicit intra/inter-op threads sized to the allowed cores, optional pinning"


@hookimpl
def register_backends(register):
    register(CpuPinned())
