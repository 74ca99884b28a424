"""Stopping a batch cleanly: the first Ctrl-C (or SIGTERM) lets the started images finish,
then the batch stops; a second one stops at once.

The runner only needs a ``threading.Event``: it checks ``stop.is_set()`` before starting each
image, so whatever executes the batch (one loop, a pipeline of threads) stops at an image
boundary and every output already started is completed and renamed into place.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event, quiet: bool = False) -> Iterator[threading.Event]:
    """While active, SIGINT or SIGTERM sets ``stop``; a second one aborts (``stop.abort()``,
    for a :class:`rmcli.contracts.executor.Stop`), or raises KeyboardInterrupt.

    Outside the main thread (where no signal handler can be installed) it only yields ``stop``.
    ``quiet`` leaves out the note that the started images are being finished.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        aborted = getattr(stop, "aborted", None)
        if stop.is_set():
            if aborted is None or aborted.is_set():
                raise KeyboardInterrupt
            stop.abort()
            log.info("stopping at once: the started images are dropped (Ctrl-C again to quit)")
            return
        stop.set()
        if not quiet:
            log.info("interrupted: finishing the started images (Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
