"""rmcli: remove image backgrounds with ONNX models, on explicit, measurable CPU/GPU backends."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rmcli.errors import RmcliError
from rmcli.hookspecs import hookimpl

if TYPE_CHECKING:
    from rmcli.remover import Remover

__version__ = "0.1.0"
__all__ = ["Remover", "RmcliError", "hookimpl", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Remover":  # imported lazily: keeps `import rmcli` light for plugins and the CLI
        from rmcli.remover import Remover

        return Remover
    raise AttributeError(name)
