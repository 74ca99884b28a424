""":class:`ServeState`: what /readyz reports, the signal handler changes and admission counts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeState:
    """What /readyz reports and the signal handler changes."""

    ready: bool = False
    reason: str = "starting"
    draining: bool = False
    admitted: int = 0  # inference requests inside the server (rmcli.serve.admission)
