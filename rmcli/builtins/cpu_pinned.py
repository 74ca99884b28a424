"""cpu-pinned: explicit thread counts sized to the CPUs this process may really use."""

from __future__ import annotations

import os
from typing import Any

from rmcli import hookimpl
from rmcli.adaptive import auto_intra_threads
from rmcli.backends import Backend, base_options
from rmcli.cpus import (
    AFFINITY_ENTRY,
    affinity_entry,
    allowed_cpus,
    cgroup_cpu_limit,
    parse_cpu_list,
    split_binding,
    usable_cpu_count,
)
from rmcli.errors import ConfigError
from rmcli.plugins import warn
from rmcli.settings import Settings

_auto_threads: dict[tuple, int] = {}  # (session settings, CPUs) -> thread count auto chose


class CpuPinned(Backend):
    """The default: intra-op threads = usable cores (affinity mask, cgroup quota), never 0."""

    name = "cpu-pinned"
    summary = "CPU, explicit intra/inter-op threads sized to the allowed cores, optional pinning"

    def layout(self, settings: Settings) -> dict[str, Any]:
        """Threads, CPU groups and spinning this backend will use (raises ConfigError)."""
        binding = self.binding(settings)
        threads = settings["intra_threads"]
        if threads is None:
            threads = len(binding) if binding else usable_cpu_count()
        elif threads == "auto":  # sized to the idle share of the cores, measured now
            cpus = tuple(binding or allowed_cpus())
            key = (settings.session_key(), cpus)
            if key not in _auto_threads:  # decided once, like the session it sizes: the
                # session, -v and the pinning of the calling thread all see the same answer
                _auto_threads[key] = auto_intra_threads(list(cpus), usable_cpu_count())
            threads = _auto_threads[key]
        if binding and len(binding) < threads:
            raise ConfigError(
                f"cpu_binding {settings['cpu_binding']!r} ({settings.source('cpu_binding')}) "
                f"names {len(binding)} CPUs but intra_threads is {threads}: "
                "give at least one CPU per thread"
            )
        parallel = settings["execution_mode"] == "parallel"
        groups = split_binding(binding, threads) if binding else []
        return {
            "intra_threads": threads,
            "inter_threads": (settings["inter_threads"] or 1) if parallel else 1,
            "execution_mode": settings["execution_mode"],
            "allowed_cpus": allowed_cpus(),
            "cgroup_cpu_limit": cgroup_cpu_limit(),
            "caller_cpus": groups[0] if groups else None,
            "worker_cpus": groups[1:],
            "allow_spinning": settings["allow_spinning"],
            "spin_stop_after_run": settings["allow_spinning"],
        }

    def binding(self, settings: Settings) -> list[int]:
        """The CPUs named by ``cpu_binding``, checked against the allowed set ([] = no pinning)."""
        text = settings["cpu_binding"]
        if not text:
            return []
        source = settings.source("cpu_binding")
        try:
            cpus = parse_cpu_list(text)
        except ValueError as exc:
            raise ConfigError(f"cpu_binding {text!r} ({source}) {exc}") from None
        allowed = allowed_cpus()
        outside = [c for c in cpus if c not in allowed]
        if outside:
            raise ConfigError(
                f"cpu_binding {text!r} ({source}) names CPUs {outside} outside the ones this "
                f"process may use: {allowed}"
            )
        return cpus

    def session_options(self, settings: Settings):
        import onnxruntime as ort

        layout = self.layout(settings)
        if layout["execution_mode"] != "parallel" and settings["inter_threads"] is not None:
            warn(
                f"inter_threads={settings['inter_threads']} ({settings.source('inter_threads')}) "
                "is ignored: inter-op threads only run in execution_mode=parallel"
            )
        options = base_options(settings)
        options.intra_op_num_threads = layout["intra_threads"]
        options.inter_op_num_threads = layout["inter_threads"]
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if layout["execution_mode"] == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        spin = "1" if layout["allow_spinning"] else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if layout["allow_spinning"]:
            # spin during a run (fast hand-offs between operators), stop right after it
            options.add_session_config_entry("session.force_spinning_stop", "1")
        if layout["worker_cpus"]:
            options.add_session_config_entry(AFFINITY_ENTRY, affinity_entry(layout["worker_cpus"]))
        return options

    def describe(self, settings: Settings) -> dict[str, Any]:
        return self.layout(settings)

    def pin_calling_thread(self, settings: Settings) -> list[int] | None:
        """Pin the calling thread to the first CPU group of ``cpu_binding``; None when unbound.

        Call it only after every session of the process exists: threads created later by this
        thread (including ORT workers of sessions built later) inherit the mask.
        """
        groups = self.layout(settings)["caller_cpus"]
        if not groups or not hasattr(os, "sched_setaffinity"):
            return None
        os.sched_setaffinity(0, groups)  # pid 0 = the calling thread only, on Linux
        return groups


@hookimpl
def register_backends(register):
    register(CpuPinned())
