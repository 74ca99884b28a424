"""The one place thread counts are decided: a :class:`ThreadLayout` per session.

``resolve_layout`` turns the settings and the CPUs this process may use (affinity mask capped
by the cgroup quota) into a layout, lets the backend adjust it, warns once for each setting
the user gave that the backend ignores, and returns it. The session stores it in its plan,
and ``-v``, ``bench``, the calling-thread pin and the Dask workers read that same object.
:func:`apply_layout` is the only code that sets ONNX Runtime's thread options. A
:class:`CoreBudget` splits the usable cores between inference slots that run at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rmcli.contracts.threads import ThreadLayout
from rmcli.cpus import (
    AFFINITY_ENTRY,
    affinity_entry,
    allowed_cpus,
    cgroup_cpu_limit,
    check_binding,
    split_binding,
    usable_cpu_count,
)
from rmcli.errors import ConfigError

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.contracts.backend import Backend

log = logging.getLogger(__name__)


def resolve_layout(
    settings: Settings,
    backend: Backend,
    *,
    cores: int | None = None,
    measure_idle: Callable[[list[int], int], int] | None = None,
) -> ThreadLayout:
    """The layout of one session: from ``settings``, the usable CPUs, then the backend.

    ``cores`` overrides the usable core count (a Dask worker's ``nthreads``, a core budget's
    slot). ``measure_idle(cpus, limit)`` sizes ``intra_threads = auto`` (default: the idle
    share of the CPUs over 150 ms, see :mod:`rmcli.engine.adaptive`).
    """
    allowed = allowed_cpus()
    usable = max(1, cores) if cores else usable_cpu_count()
    binding = _binding(settings, allowed)
    wanted = settings["intra_threads"]
    if isinstance(wanted, int):
        intra, source = wanted, "setting"
    elif wanted == "auto":
        if measure_idle is None:
            from rmcli.engine.adaptive import auto_intra_threads as measure_idle
        intra, source = measure_idle(binding or allowed, usable), "auto"
    elif binding:
        intra, source = len(binding), "binding"
    else:
        intra, source = usable, "cores"
    if binding and len(binding) < intra:
        raise ConfigError(
            f"cpu_binding {settings['cpu_binding']!r} ({settings.source('cpu_binding')}) "
            f"names {len(binding)} CPUs but intra_threads is {intra}: "
            "give at least one CPU per thread"
        )
    parallel = settings["execution_mode"] == "parallel"
    groups = split_binding(binding, intra) if binding else []
    layout = ThreadLayout(
        intra_threads=intra,
        inter_threads=(settings["inter_threads"] or 1) if parallel else 1,
        execution_mode=settings["execution_mode"],
        spinning=settings["allow_spinning"],
        worker_cpus=tuple(tuple(g) for g in groups[1:]),
        caller_cpus=tuple(groups[0]) if groups else (),
        usable_cpus=usable,
        allowed_cpus=tuple(allowed),
        cgroup_cpu_limit=cgroup_cpu_limit(),
        intra_from=source,
    )
    if not parallel:
        layout = layout.ignore(
            "inter_threads", "inter-op threads only run in execution_mode=parallel"
        )
    layout = backend.adjust_layout(layout, settings)
    layout = replace(layout, encode_threads=max(1, usable // settings["inflight"]))
    _warn_ignored(layout, settings, backend)
    if layout.intra_threads and layout.intra_threads > usable:
        log.warning(
            f"intra_threads={layout.intra_threads} ({settings.source('intra_threads')}) is more "
            f"than the {usable} usable core(s): the threads compete for them and every image "
            "gets slower (leave intra_threads unset to use the usable cores)"
        )
    return layout


def _binding(settings: Settings, allowed: list[int]) -> list[int]:
    text = settings["cpu_binding"]
    if not text:
        return []
    try:
        return check_binding(text, allowed)
    except ValueError as exc:
        raise ConfigError(
            f"cpu_binding {text!r} ({settings.source('cpu_binding')}) {exc}"
        ) from None


def _warn_ignored(layout: ThreadLayout, settings: Settings, backend: Backend) -> None:
    """One warning per setting the user gave (not a default) that the backend ignores."""
    for key, reason in layout.ignored:
        if key not in settings or not settings.given(key):
            continue
        if settings[key] in (None, ""):
            continue
        log.warning(
            f"{key}={settings[key]} ({settings.source(key)}) is ignored by backend "
            f"{backend.name}: {reason}"
        )


def apply_layout(options: Any, layout: ThreadLayout) -> None:
    """Set ``options`` (an ``ort.SessionOptions``) from ``layout``: thread counts, execution
    mode, spinning and worker affinity. The only place rmcli assigns these."""
    import onnxruntime as ort

    if layout.intra_threads is not None:
        options.intra_op_num_threads = layout.intra_threads
    if layout.inter_threads is not None:
        options.inter_op_num_threads = layout.inter_threads
    if layout.execution_mode is not None:
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if layout.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
    if layout.spinning is not None:
        spin = "1" if layout.spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if layout.spinning:  # spin during a run (fast hand-offs), stop right after it
            options.add_session_config_entry("session.force_spinning_stop", "1")
    if layout.worker_cpus:
        groups = [list(g) for g in layout.worker_cpus]
        options.add_session_config_entry(AFFINITY_ENTRY, affinity_entry(groups))


def pin_calling_thread(layout: ThreadLayout) -> list[int] | None:
    """Pin the calling thread to ``layout.caller_cpus``; the CPUs, or None when unbound.

    Call it only after every session of the process exists: threads created later by this
    thread (ORT workers of sessions built later included) would inherit the mask. The CLI does
    it; a library never pins its caller's thread by itself.
    """
    if not layout.caller_cpus or not hasattr(os, "sched_setaffinity"):
        return None
    os.sched_setaffinity(0, layout.caller_cpus)  # pid 0 = the calling thread only, on Linux
    return list(layout.caller_cpus)


@dataclass(frozen=True)
class CoreBudget:
    """The usable cores, split between inference slots that run at the same time.

    ``split(k)`` gives each of (at most ``cores``) slots an intra-op thread count; the counts
    add up to no more than ``cores``, so K concurrent ``session.run`` calls never oversubscribe.
    """

    cores: int

    @classmethod
    def here(cls) -> CoreBudget:
        """The budget of this process: its usable cores."""
        return cls(usable_cpu_count())

    def split(self, slots: int) -> tuple[int, ...]:
        """Threads per slot for ``slots`` concurrent inferences (capped at one per core)."""
        slots = max(1, min(slots, self.cores))
        size, extra = divmod(self.cores, slots)
        return tuple(size + (1 if i < extra else 0) for i in range(slots))

    def slot_settings(self, settings: Settings, slots: int) -> Settings:
        """``settings`` whose sessions fit one of ``slots`` slots (an explicit
        ``intra_threads`` is kept if it fits, else lowered to the slot's share)."""
        share = min(self.split(slots))
        wanted = settings["intra_threads"]
        if isinstance(wanted, int) and wanted <= share:
            return settings
        return settings.derived(f"core budget: {slots} slot(s)", intra_threads=share)
