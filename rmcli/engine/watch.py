"""Watching a folder: images that appear or change are cut out once completely written.

Built on watchdog (inotify on Linux, the native API elsewhere, polling as a fallback): it
knows each platform's file events far better than a hand-written poller. An event only makes
a file a candidate; it is processed once its size and modification time stayed the same for
``settle`` seconds, so a file still being copied in is never read half-written. Each file runs
through a :class:`rmcli.Batch` of one on the same remover, so the session stays warm and a bad
file is one reported failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rmcli.contracts.jobs import Result
from rmcli.contracts.output import OutputOptions
from rmcli.engine.runner import Batch
from rmcli.images.imaging import IMAGE_SUFFIXES

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
WRITES = {"created", "modified", "moved", "closed"}  # watchdog's event types that may be new data


@dataclass
class WatchCounts:
    """What a watch did until it was stopped."""

    written: int = 0
    failed: int = 0
    deleted: int = 0
    seen: set[Path] = field(default_factory=set)

    def line(self) -> str:
        text = f"{self.written} written, {self.failed} failed"
        return text + (f", {self.deleted} input(s) deleted" if self.deleted else "")


class FolderWatch:
    """Cut out every image that appears or changes in ``folder`` until ``stop`` is set.

    ``output`` is the output folder (None: ``NAME.out.png`` beside each input). With
    ``delete_input`` an input is deleted once its output is written (rembg ``p -d``).
    """

    def __init__(
        self,
        remover: Any,
        folder: str | Path,
        output: str | Path | None,
        options: OutputOptions,
        *,
        recursive: bool = False,
        delete_input: bool = False,
        settle: float = 0.5,
    ) -> None:
        self.remover = remover
        self.folder = Path(folder)
        self.output = Path(output) if output is not None else None
        self.options = options
        self.recursive = recursive
        self.delete_input = delete_input
        self.settle = settle
        self.counts = WatchCounts()
        self._pending: dict[Path, tuple[float, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()

    def wanted(self, path: Path) -> bool:
        """An image named like one, not hidden (temporary files), not one of our outputs."""
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            return False
        if self.output is not None:
            try:
                path.resolve().relative_to(self.output.resolve())
                return False  # the output folder inside the watched one
            except ValueError:
                pass
        return ".out." not in path.name  # NAME.out.png written beside its input

    def notice(self, path: str | Path) -> None:
        """A file event: ``path`` may be new or changed (called from watchdog's thread)."""
        path = Path(path)
        if self.wanted(path):
            with self._lock:
                self._pending[path] = (time.monotonic(), None)

    def run(self, on_result: Callable[[Result], None], stop: threading.Event) -> WatchCounts:
        """Watch until ``stop`` is set; ``on_result`` gets each processed file's result."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.is_directory or event.event_type not in WRITES:
                    return  # opened / closed_no_write: a read (ours too), nothing new
                watch.notice(getattr(event, "dest_path", "") or event.src_path)

        observer = Observer()
        observer.schedule(Handler(), str(self.folder), recursive=self.recursive)
        observer.start()
        try:
            while not stop.is_set():
                for path in self._settled():
                    self._process(path, on_result)
                stop.wait(POLL_SECONDS)
        finally:
            observer.stop()
            observer.join()
        return self.counts

    def _settled(self) -> list[Path]:
        """Candidates whose size and mtime held still for ``settle`` seconds."""
        now = time.monotonic()
        ready = []
        with self._lock:
            for path, (since, last) in list(self._pending.items()):
                try:
                    stat = path.stat()
                except OSError:
                    del self._pending[path]  # gone again (moved away, deleted)
                    continue
                state = (stat.st_size, stat.st_mtime_ns)
                if state != last:
                    self._pending[path] = (now, state)
                elif now - since >= self.settle:
                    del self._pending[path]
                    ready.append(path)
        return sorted(ready)

    def _process(self, path: Path, on_result: Callable[[Result], None]) -> None:
        batch = Batch(self.remover, [str(path)], self.output, options=self.options)
        if self.output is not None and self.recursive:  # keep the sub-folder as -r does
            relative = path.parent.relative_to(self.folder)
            batch.jobs = [replace(j, output=self.output / relative / Path(j.output).name)
                          for j in batch.jobs]  # fmt: skip
        for result in batch.run():
            self.counts.seen.add(path)
            if result.error:
                self.counts.failed += 1
            else:
                self.counts.written += 1
                if self.delete_input:
                    path.unlink(missing_ok=True)
                    self.counts.deleted += 1
            on_result(result)
