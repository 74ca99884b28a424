"""The Backend contract: how a plugin turns settings into an ONNX Runtime session set-up,
and the session plan it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.contracts.threads import ThreadLayout

if TYPE_CHECKING:
    import onnxruntime as ort

    from rmcli.config.settings import Settings
    from rmcli.contracts.model import Model

Provider = str | tuple[str, dict[str, Any]]


def provider_name(provider: Provider) -> str:
    """The name of a provider entry, whether given bare or as ``(name, options)``."""
    return provider if isinstance(provider, str) else provider[0]


class Backend:
    """Base class for execution backends; override what differs.

    ``name`` is what users pass to ``--backend``; ``summary`` is one line for ``rmcli backends``.
    Thread counts are not set here: rmcli resolves a :class:`rmcli.ThreadLayout` once per
    session, the backend may adjust it, and rmcli applies it to the options.
    Methods must not import heavy modules at import time of the plugin (import inside them).
    """

    name: str = ""
    summary: str = ""
    #: True when this backend replaces a built-in one of the same name (see docs/plugins.md)
    replaces: bool = False
    #: True when the backend still runs (on the CPU, with a warning) while ``availability()``
    #: says its device cannot be used; False makes building a session fail with the reason.
    cpu_fallback: bool = False
    #: the ``precision`` values this backend honours; rmcli refuses any other before building
    precisions: tuple[str, ...] = ("fp32",)

    def availability(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why (or why not), in a few words."""
        return True, "always available"

    def adjust_layout(self, layout: ThreadLayout, settings: Settings) -> ThreadLayout:
        """The layout this backend runs with (default: rmcli's, unchanged).

        Return ``dataclasses.replace(layout, ...)``; call ``layout.ignore(key, why)`` for a
        setting this backend does not honour, so rmcli warns when a user gave it.
        """
        return layout

    def session_options(self, settings: Settings) -> ort.SessionOptions:
        """A fresh ``onnxruntime.SessionOptions`` (no thread counts: the layout sets them)."""
        return base_options(settings)

    def providers(self, settings: Settings, layout: ThreadLayout) -> list[Provider]:
        """Execution providers in precedence order, each a name or ``(name, options)``."""
        return ["CPUExecutionProvider"]

    def check_session(self, session: Any, plan: SessionPlan) -> None:
        """Check a freshly built session really runs as planned (e.g. on the GPU).

        Raise :class:`rmcli.BackendError` to refuse it, or log a warning.
        """

    def describe(self, settings: Settings) -> dict[str, Any]:
        """What ``-v`` shows beyond the thread layout (providers, device...)."""
        return {}


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


@dataclass
class SessionPlan:
    """What goes into one ``InferenceSession``; ``adjust_session`` hooks may change options
    and providers (not the layout, which is already applied to the options)."""

    model: Model
    backend: Backend
    settings: Settings
    layout: ThreadLayout
    weights_path: Path
    options: Any  # onnxruntime.SessionOptions
    providers: list[Provider] = field(default_factory=list)
