"""The ``precision`` setting: refused, naming a backend that can, by a backend that cannot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rmcli.engine.registry import backends
from rmcli.errors import ConfigError

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.contracts.backend import Backend


def check_precision(backend: Backend, settings: Settings) -> None:
    """Raise a one-line :class:`ConfigError` when ``backend`` cannot run ``precision``."""
    precision = settings["precision"]
    if precision in backend.precisions:
        return
    able = sorted(n for n, b in backends().items() if precision in getattr(b, "precisions", ()))
    hint = f": use --backend {able[0]}" if able else ": no installed backend can"
    raise ConfigError(
        f"backend {backend.name!r} runs {'/'.join(backend.precisions)} only, not precision "
        f"{precision} ({settings.source('precision')}){hint}"
    )
