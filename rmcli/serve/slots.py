"""The core budget of ``rmcli serve``: K inference slots of T intra-op threads, K x T within
the usable cores, and the session settings that share them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rmcli.config.settings import Settings

log = logging.getLogger("rmcli.serve")


@dataclass(frozen=True)
class SlotBudget:
    """K inference slots of ``threads`` intra-op threads each; K x threads <= usable cores.

    Built on :class:`rmcli.engine.layout.CoreBudget`; the slots share one session per model,
    so every slot gets the smallest share.
    """

    usable: int
    slots: int
    threads: int

    @classmethod
    def split(cls, usable: int, wanted_slots: int = 0) -> SlotBudget:
        """``wanted_slots`` clamped to the cores; 0: one slot per two cores.

        Two-thread slots cost little speed (ONNX Runtime scales well from one thread to two)
        and halve the activation memory held by concurrent runs (about 270 MB per u2netp
        run); ``serve_slots`` = cores gives single-thread slots, the most throughput.
        """
        from rmcli.engine.layout import CoreBudget

        budget = CoreBudget(max(1, usable))
        if wanted_slots > budget.cores:
            log.warning(
                "serve_slots %d is above the %d usable cores: using %d slots of 1 thread",
                wanted_slots,
                budget.cores,
                budget.cores,
            )
        shares = budget.split(wanted_slots or max(1, budget.cores // 2))
        return cls(budget.cores, len(shares), min(shares))

    def slot_settings(self, settings: Settings, width: int = 1) -> Settings:
        """``settings`` whose sessions fit ``width`` slots taken at once (intra_threads at most
        their share; a heavy model's request may take several, see ``serve_heavy_slots``).

        See :func:`concurrent_callers` for spinning and OpenVINO streams.
        """
        from rmcli.engine.layout import CoreBudget

        callers = max(1, self.slots // max(1, width))
        settings = CoreBudget(self.usable).slot_settings(settings, callers)
        return concurrent_callers(settings, callers)


def concurrent_callers(settings: Settings, callers: int) -> Settings:
    """``settings`` for one session that ``callers`` threads run at once.

    Spinning is off unless set: a spinning intra-op thread takes CPU from the other callers,
    the codec pool and the event loop. OpenVINO gets one stream per caller unless
    ``openvino_streams`` is set: with one stream, concurrent runs wait for each other.
    """
    if not settings.given("allow_spinning"):
        settings = settings.with_values("serve: slots share the cores", allow_spinning=False)
    if callers > 1 and not settings.given("openvino_streams"):
        settings = settings.with_values(
            "serve: one OpenVINO stream per slot", openvino_streams=callers
        )
    return settings
