"""Who gets the next inference slot: per-model queues served by measured cost."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class FairScheduler:
    """K slots shared by per-model queues in proportion to cost, FIFO within one model.

    Start-time fair queueing: each model has a virtual clock, the slot-seconds it has been
    given (its measured seconds per request, ``cost(key)``, per grant); a free slot goes to the
    waiting model whose clock is lowest, so light models get many requests in while a heavy one
    runs one, and the heavy one is not starved. A model whose queue becomes non-empty starts
    level with the clock of the last grant (no credit saved while idle). ``admit(key)`` (the
    memory budget) may hold a model back: one with work in flight is skipped (its concurrency
    is capped by what fits), one with none blocks the others until memory frees, so it is
    never starved by lighter ones. Cancelling a waiter takes it out of its queue; a slot
    granted to a waiter cancelled at that moment is passed on. ``width(key)``: the slots one
    request of ``key`` takes at once (a heavy model's wider layout); when the model whose turn
    it is needs more slots than are free, the free ones wait for it, so it is not starved by
    narrower requests. Event-loop only (not thread-safe); release from threads through
    ``call_soon_threadsafe``.
    """

    def __init__(
        self,
        slots: int,
        cost: Callable[[str], float] = lambda key: 1.0,
        admit: Callable[[str], bool] = lambda key: True,
        width: Callable[[str], int] = lambda key: 1,
    ) -> None:
        self.slots = slots
        self.free = slots
        self.waiting = 0
        self.running: dict[str, int] = {}  # slots held, per model
        self._cost = cost
        self._admit = admit
        self._width = width
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._virtual: dict[str, float] = {}
        self._clock = 0.0  # the virtual start of the last grant

    @property
    def busy(self) -> int:
        return self.slots - self.free

    def queued(self, key: str) -> int:
        """Requests of ``key`` waiting for a slot."""
        return sum(not f.done() for f in self._queues.get(key, ()))

    def queues(self) -> dict[str, int]:
        """Waiting requests per model (models with none left out)."""
        return {key: n for key in self._queues if (n := self.queued(key))}

    def expected(self, key: str, seconds: Callable[[str], float]) -> float:
        """Seconds until one more request of ``key`` would be done, as the fair schedule serves
        it: its own queue's work, plus each other queue's work up to as much as its own (fair
        shares), spread over the slots, plus the earliest a running request frees its slot.
        ``seconds(key)``: a model's measured slot-seconds per request."""
        own = (self.queued(key) + 1) * seconds(key)
        ahead = sum(
            min(self.queued(other) * seconds(other), own) for other in self._queues if other != key
        )
        running = [seconds(k) for k, n in self.running.items() if n > 0]
        return (own + ahead) / max(1, self.slots) + (min(running) if running else 0.0)

    async def acquire(self, key: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._virtual[key] = max(self._virtual.get(key, 0.0), self._clock)
        queue.append(future)
        self.waiting += 1
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # granted as we were cancelled: hand the slot on
            else:
                queue = self._queues.get(key)
                if queue is not None and future in queue:
                    queue.remove(future)
                    self.waiting -= 1
                    if not queue:
                        del self._queues[key]
                self._dispatch()  # a model blocked behind this one may go now
            raise

    def resize(self, slots: int) -> None:
        """Change K (a Dask cluster's threads come and go); waiters get the new slots."""
        self.free += slots - self.slots
        self.slots = slots
        self._dispatch()

    def release(self, key: str = "") -> None:
        """The slots of one request of ``key`` are free again."""
        width = self.width(key)
        if key in self.running:
            self.running[key] -= width
        self.free += width
        self._dispatch()

    def width(self, key: str) -> int:
        """Slots one request of ``key`` takes (at most all of them)."""
        return max(1, min(self._width(key), self.slots)) if key else 1

    def _dispatch(self) -> None:
        """Grant free slots to the waiting models, lowest virtual clock first."""
        while self.free > 0 and self.waiting:
            chosen = None
            for key in sorted(self._live(), key=lambda k: self._virtual[k]):
                if self._admit(key):
                    chosen = key
                    break
                if not self.running.get(key):
                    return  # it waits for memory that only finishing work frees: all wait
            if chosen is None:
                return
            width = self.width(chosen)
            if self.free < width:
                return  # the free slots wait for more to free: the wide request is next
            queue = self._queues[chosen]
            future = queue.popleft()
            self.waiting -= 1
            if not queue:
                del self._queues[chosen]
            self._clock = self._virtual[chosen]
            self._virtual[chosen] += self._cost(chosen)
            self.free -= width
            self.running[chosen] = self.running.get(chosen, 0) + width
            future.set_result(None)

    def _live(self) -> list[str]:
        """Models with a waiter whose future is not done (cancelled ones dropped)."""
        for key in list(self._queues):
            queue = self._queues[key]
            while queue and queue[0].done():
                queue.popleft()
                self.waiting -= 1
            if not queue:
                del self._queues[key]
        return list(self._queues)
