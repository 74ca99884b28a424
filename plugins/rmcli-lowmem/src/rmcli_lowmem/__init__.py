"""rmcli-lowmem: an rmcli execution backend for memory-constrained containers.

Sequential execution, no CPU memory arena (memory goes back to the allocator after each run),
no memory pattern (no pre-planned buffers), no spinning (a spinning thread burns the CPU quota),
and intra-op threads from the cgroup CPU quota. Options from ``[plugins.lowmem]`` in the config
file: ``threads`` (an integer, overrides the quota).
"""

from __future__ import annotations

from typing import Any

import rmcli
from rmcli.backends import Backend, base_options
from rmcli.cpus import cgroup_cpu_limit, usable_cpu_count
from rmcli.errors import ConfigError

__version__ = "0.1.0"


class LowMem(Backend):
    """Trade some speed for a smaller resident set: what a 512 MB container wants."""

    name = "lowmem"
    summary = "CPU, sequential, no memory arena or pattern, threads from the cgroup quota"

    def threads(self, settings) -> int:
        """``[plugins.lowmem] threads``, else ``intra_threads``, else the usable cores."""
        configured = settings.plugin("lowmem").get("threads")
        if configured is not None:
            if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
                raise ConfigError(f"[plugins.lowmem] threads = {configured!r} is not a count >= 1")
            return configured
        if isinstance(settings["intra_threads"], int):
            return settings["intra_threads"]
        return usable_cpu_count()

    def session_options(self, settings):
        import onnxruntime as ort

        options = base_options(settings)  # rmcli's shared defaults: graph level, log level
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.intra_op_num_threads = self.threads(settings)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def describe(self, settings) -> dict[str, Any]:
        return {
            "intra_threads": self.threads(settings),
            "cgroup_cpu_limit": cgroup_cpu_limit(),
            "cpu_mem_arena": False,
            "mem_pattern": False,
            "spinning": False,
        }


@rmcli.hookimpl
def register_backends(register):
    register(LowMem())
