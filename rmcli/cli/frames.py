"""The frame counter of a clip on the terminal: ``[frame N/M] label  x.x fps  ETA s``."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frame_progress(enabled: bool = True) -> Iterator[None]:
    """While active, clips show ``[frame N/M] label  x.x fps  ETA s`` on a terminal."""
    from rmcli.video.clip import report_frames_to

    started: dict[str, float] = {}
    active = enabled and sys.stderr.isatty()
    lock = threading.Lock()

    def show(label: str, done: int, expected: int | None) -> None:
        if not active:
            return
        if done == 0:  # the clip is over
            with lock:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()
            return
        now = time.monotonic()
        start = started.setdefault(label, now)
        rate = (done - 1) / (now - start) if done > 1 and now > start else 0.0
        total = f"/{expected}" if expected and expected >= done else ""
        eta = ""
        if total and rate > 0:
            eta = f"  ETA {max(0.0, (expected - done) / rate):.0f} s"
        with lock:
            sys.stderr.write(f"\r\x1b[K[frame {done}{total}] {label}  {rate:.1f} fps{eta}")
            sys.stderr.flush()

    try:
        with report_frames_to(show):
            yield
    finally:
        if active and started:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
