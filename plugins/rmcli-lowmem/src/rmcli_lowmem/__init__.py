"""rmcli-lowmem: an rmcli execution backend for memory-constrained containers.

Sequential execution, no CPU memory arena (memory goes back to the allocator after each run),
no memory pattern (no pre-planned buffers), no spinning (a spinning thread burns the CPU quota),
and intra-op threads from the cgroup CPU quota. Options from ``[plugins.lowmem]`` in the config
file: ``threads`` (an integer, overrides the quota).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from rmcli import Backend, ConfigError, ThreadLayout, base_options, cgroup_cpu_limit, hookimpl

__version__ = "0.1.0"


class LowMem(Backend):
    """Trade some speed for a smaller resident set: what a 512 MB container wants."""

    name = "lowmem"
    summary = "CPU, sequential, no memory arena or pattern, threads from the cgroup quota"

    def adjust_layout(self, layout: ThreadLayout, settings) -> ThreadLayout:
        """``[plugins.lowmem] threads`` if set, else rmcli's count; sequential, no spinning."""
        configured = settings.plugin("lowmem").get("threads")
        intra, source = layout.intra_threads, layout.intra_from
        if configured is not None:
            if isinstance(configured, bool) or not isinstance(configured, int) or configured < 1:
                raise ConfigError(f"[plugins.lowmem] threads = {configured!r} is not a count >= 1")
            intra, source = configured, "backend"
        layout = replace(
            layout,
            intra_threads=intra,
            inter_threads=1,
            execution_mode="sequential",
            spinning=False,
            intra_from=source,
        )
        layout = layout.ignore("execution_mode", "it always runs sequentially")
        layout = layout.ignore("inter_threads", "it always runs sequentially")
        return layout.ignore("allow_spinning", "spinning threads burn the CPU quota")

    def session_options(self, settings):
        options = base_options(settings)  # rmcli's shared defaults: graph level, log level
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        return options

    def describe(self, settings) -> dict[str, Any]:
        return {"cgroup_cpu_limit": cgroup_cpu_limit(), "cpu_mem_arena": False}


@hookimpl
def register_backends(register):
    register(LowMem())
