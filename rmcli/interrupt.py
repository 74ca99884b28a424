"""Stopping a batch cleanly: the first Ctrl-C lets the current image finish, then the batch stops.

The runner only needs a ``threading.Event``: it checks ``stop.is_set()`` before starting each
image, so whatever executes the batch (one loop, a pipeline of threads) stops at an image
boundary and every output already started is completed and renamed into place.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_interrupt(stop: threading.Event) -> Iterator[threading.Event]:
    """While active, SIGINT sets ``stop``; a second SIGINT raises KeyboardInterrupt at once.

    Outside the main thread (where no signal handler can be installed) it only yields ``stop``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(
            "rmcli: interrupted: finishing the current image (Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
