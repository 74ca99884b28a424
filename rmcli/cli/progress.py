"""Progress of a batch on the terminal: a rich bar (count, rate, ETA, current file) on stderr.

Written paths still go to stdout. When stderr is not a terminal the bar is replaced by
nothing (each written path and each failure is already one line); ``-q`` turns it off.
"""

from __future__ import annotations

import sys
from typing import Any


class BatchProgress:
    """``with BatchProgress(total, unit) as progress: progress.step(label)``."""

    def __init__(self, total: int, unit: str = "image", enabled: bool = True) -> None:
        self.total = total
        self.unit = unit
        self.enabled = enabled and total > 1 and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> BatchProgress:
        if not self.enabled:
            return self
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[label]}", style="dim"),
            console=Console(stderr=True),
            redirect_stdout=sys.stdout.isatty(),  # written paths above the bar, not through it
            redirect_stderr=True,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=self.total, rate="", label="")
        return self

    def step(self, label: str) -> None:
        """One more done; ``label`` names it."""
        if self._progress is None:
            return
        self._progress.advance(self._task)
        task = self._progress.tasks[0]
        speed = task.speed
        rate = f"{speed:.2f} {self.unit}s/s" if speed else ""
        self._progress.update(self._task, rate=rate, label=label)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


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
