"""Progress of a batch on the terminal: a rich bar (count, rate, ETA, current file) on stderr.

Written paths go to stdout. While the bar is shown, they (and failures, and log lines) are
printed by the bar's own rich console, so each lands on a line of its own above the bar and
never on the bar's line. When stderr is not a terminal there is no bar (each written path and
each failure is already one line); ``-q`` turns it off.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class BatchProgress:
    """``with BatchProgress(total, unit) as progress: progress.step(label); progress.echo(path)``.

    The rate is the average since the bar started, shown once the first item is done (a rate
    measured over the first item or two, which often finish together, means nothing).
    """

    def __init__(self, total: int, unit: str = "image", enabled: bool = True) -> None:
        self.total = total
        self.unit = unit
        self.enabled = enabled and total > 1 and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._started = 0.0
        self._done = 0

    def __enter__(self) -> BatchProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[label]}", style="dim"),
            console=Console(stderr=True),
            redirect_stdout=False,  # written paths come through echo(), not a stream proxy
            redirect_stderr=True,  # notes and warnings land above the bar
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=self.total, rate="", label="")
        self._started = time.monotonic()
        return self

    def step(self, label: str) -> None:
        """One more done; ``label`` names it."""
        self._done += 1
        if self._progress is None:
            return
        elapsed = time.monotonic() - self._started
        rate = ""
        if elapsed > 0:
            speed = self._done / elapsed
            left = (self.total - self._done) / speed
            rate = f"{speed:.2f} {self.unit}s/s ETA {_clock(left)}"
        self._progress.update(self._task, advance=1, rate=rate, label=label)

    def echo(self, line: str, err: bool = False) -> None:
        """Print one line to stdout (``err``: stderr); above the bar while it is shown.

        Both streams are one terminal then, so the bar's console prints the line: nothing can
        reach the bar's line. Stdout that is not a terminal (a pipe) gets the line directly.
        """
        stream = sys.stderr if err else sys.stdout
        if self._progress is not None and (err or sys.stdout.isatty()):
            self._progress.console.print(
                line, markup=False, highlight=False, emoji=False, soft_wrap=True
            )
            return
        stream.write(f"{line}\n")  # one write: never split by a note
        stream.flush()

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class DownloadProgress:
    """A weights download on the terminal: bytes, speed and time left (rich), on stderr."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def start(self, label: str, total: int | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("fetching {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self, size: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, size)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def show_downloads() -> None:
    """Show weights downloads as a bar when stderr is a terminal (for this command)."""
    if sys.stderr.isatty():
        from rmcli.engine.weights import fetch_progress

        fetch_progress.set(DownloadProgress())
