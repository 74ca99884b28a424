"""The Backend contract: how a plugin turns settings into an ONNX Runtime session set-up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnxruntime as ort

    from rmcli.settings import Settings

Provider = str | tuple[str, dict[str, Any]]


def provider_name(provider: Provider) -> str:
    """The name of a provider entry, whether given bare or as ``(name, options)``."""
    return provider if isinstance(provider, str) else provider[0]


class Backend:
    """Base class for execution backends; override what differs.

    ``name`` is what users pass to ``--backend``; ``summary`` is one line for ``rmcli backends``.
    Methods must not import heavy modules at import time of the plugin (import inside them).
    """

    name: str = ""
    summary: str = ""
    #: True when the backend still runs (on the CPU, with a warning) while ``availability()``
    #: says its device cannot be used; False makes building a session fail with the reason.
    cpu_fallback: bool = False

    def availability(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why (or why not), in a few words."""
        return True, "always available"

    def session_options(self, settings: Settings) -> ort.SessionOptions:
        """A fresh ``onnxruntime.SessionOptions`` configured from ``settings``."""
        import onnxruntime as ort

        return ort.SessionOptions()

    def providers(self, settings: Settings) -> list[Provider]:
        """Execution providers in precedence order, each a name or ``(name, options)``."""
        return ["CPUExecutionProvider"]

    def describe(self, settings: Settings) -> dict[str, Any]:
        """The effective layout (threads, cores, spinning...) for ``-v`` and benchmarks."""
        return {}

    def pin_calling_thread(self, settings: Settings) -> list[int] | None:
        """Pin the thread that will call ``run`` once its sessions exist; the CPUs, or None.

        The CLI calls it after building its session. A library never pins its caller's
        thread by itself: Python users call this explicitly if they want it.
        """
        return None


GRAPH_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def base_options(settings: Settings) -> ort.SessionOptions:
    """Options every built-in backend shares: graph level and no memory pattern (saves ~190 MB)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, GRAPH_LEVELS[settings["graph_optimization"]]
    )
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options
