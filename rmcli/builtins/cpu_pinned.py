"""cpu-pinned: explicit thread counts sized to the CPUs this process may really use."""

from __future__ import annotations

from typing import Any

from rmcli import hookimpl
from rmcli.adaptive import auto_intra_threads
from rmcli.backends import Backend, base_options
from rmcli.cpus import allowed_cpus, parse_cpu_list, usable_cpu_count
from rmcli.errors import ConfigError
from rmcli.settings import Settings


class CpuPinned(Backend):
    name = "cpu-pinned"
    summary = "CPU, explicit intra/inter-op threads sized to the allowed cores, optional pinning"

    def layout(self, settings: Settings) -> dict[str, Any]:
        """Threads, binding and spinning this backend will use."""
        binding = self.binding(settings)
        threads = settings["intra_threads"]
        if threads is None:
            threads = len(binding) if binding else usable_cpu_count()
        elif threads == "auto":  # sized to the idle share of the cores, measured now
            threads = auto_intra_threads(binding or allowed_cpus(), usable_cpu_count())
        if binding and len(binding) < threads:
            raise ConfigError(
                f"cpu_binding {settings['cpu_binding']!r} names {len(binding)} CPUs "
                f"but intra_threads is {threads}"
            )
        parallel = settings["execution_mode"] == "parallel"
        inter = (settings["inter_threads"] or 1) if parallel else 1
        return {
            "intra_threads": threads,
            "inter_threads": inter,
            "execution_mode": settings["execution_mode"],
            "cpu_binding": binding[:threads],
            "allow_spinning": settings["allow_spinning"],
        }

    def binding(self, settings: Settings) -> list[int]:
        text = settings["cpu_binding"]
        if not text:
            return []
        source = settings.source("cpu_binding")
        try:
            cpus = parse_cpu_list(text)
        except ValueError as exc:
            raise ConfigError(f"cpu_binding {text!r} ({source}) {exc}") from None
        allowed = set(allowed_cpus())
        outside = [c for c in cpus if c not in allowed]
        if outside:
            raise ConfigError(
                f"cpu_binding {text!r} ({source}) names CPUs {outside} outside the ones this "
                f"process may use: {sorted(allowed)}"
            )
        return cpus

    def session_options(self, settings: Settings):
        import onnxruntime as ort

        layout = self.layout(settings)
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
        options.add_session_config_entry("session.force_spinning_stop", "1")
        binding = layout["cpu_binding"]
        if binding and layout["intra_threads"] > 1:
            # ORT never pins the calling thread: one group per extra worker, 1-based CPU ids.
            groups = ";".join(str(cpu + 1) for cpu in binding[1 : layout["intra_threads"]])
            options.add_session_config_entry("session.intra_op_thread_affinities", groups)
        return options

    def describe(self, settings: Settings) -> dict[str, Any]:
        return self.layout(settings)


@hookimpl
def register_backends(register):
    register(CpuPinned())
