"""One batch runner for every front end: the CLI, ``Remover.map`` and later ones.

A :class:`Batch` plans inputs into jobs, leaves those whose output exists (``skip_existing``),
builds the session before the first image when the work runs here, runs the jobs on the
chosen executor, stops cleanly on a signal, times the stages and yields results in input
order while counting them. :func:`process` is the work of one input.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.config.settings import Layer
from rmcli.contracts.clock import Clock, untimed
from rmcli.contracts.executor import Stop
from rmcli.contracts.jobs import Job, Result
from rmcli.contracts.output import OutputOptions
from rmcli.engine.inflight import run_pipelined
from rmcli.engine.interrupt import stop_on_signals
from rmcli.engine.layout import pin_calling_thread
from rmcli.engine.registry import get_executor
from rmcli.engine.stats import BatchStats
from rmcli.errors import InputError, RmcliError, UsageError
from rmcli.images import naming, stages
from rmcli.images.compose import check_options
from rmcli.images.imaging import write_image
from rmcli.images.inputs import plan_jobs, without_existing
from rmcli.images.naming import STDIO
from rmcli.video import clip as video

if TYPE_CHECKING:
    from rmcli.contracts.executor import Masker

log = logging.getLogger(__name__)


class Aborted(Exception):
    """The batch was aborted (a second Ctrl-C): this job stops and writes nothing."""


def process(
    remover: Masker,
    job: Job,
    options: OutputOptions,
    clock: Clock = untimed,
    stop: threading.Event | None = None,
) -> None:
    """Read, cut out and write one job; an unusable input raises :class:`InputError`.

    The stages are :mod:`rmcli.images.stages`; ``clock(stage)`` wraps each of them.
    Once ``stop.aborted`` is set (a :class:`Stop` after a second Ctrl-C), the next stage (or
    the final rename) raises :class:`Aborted`.
    A clip (video, animated GIF/WebP) goes to :mod:`rmcli.video`, which stops mid-clip once
    ``stop`` is set.
    """
    abort = stop.aborted if isinstance(stop, Stop) else None  # a plain Event: no abort

    def check() -> None:
        if abort is not None and abort.is_set():
            raise Aborted

    if abort is not None:
        clock = _checked(clock, check)

    if job.error:
        raise InputError(f"{job.label}: {job.error}")
    if video.handle(remover, job, options, clock, stop):
        return
    source = sys.stdin.buffer.read() if job.source is None else job.source
    image, mask = stages.decode_and_mask(remover, source, job.label, clock)
    result = stages.compose_checked(image, mask, options.compose, options.fmt, job.label, clock)
    del image, mask  # the cut-out may have reused the image's memory
    threads = options.threads or 1
    if job.output is None:
        data = stages.encoded(result, options.fmt, options.png_compression, threads, clock)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    with clock("encode"):
        try:
            write_image(result, job.output, options.fmt, options.png_compression, threads, check)
        except OSError as exc:
            reason = exc.strerror or exc
            raise InputError(f"{job.label}: cannot write {job.output}: {reason}") from None


def _checked(clock: Clock, check: Callable[[], None]) -> Clock:
    """``clock`` whose every stage starts with ``check()``."""

    def stage(name: str):
        check()
        return clock(name)

    return stage


def process_isolated(
    remover: Masker,
    job: Job,
    options: OutputOptions,
    clock: Clock = untimed,
    stop: threading.Event | None = None,
) -> Result | None:
    """:func:`process` as a :class:`Result`: an unusable input, or an unexpected exception
    while handling this one input, is this input's failure and the batch goes on. None when
    the batch was aborted before this job wrote anything."""
    try:
        process(remover, job, options, clock, stop)
    except Aborted:
        return None
    except InputError as exc:
        return Result(job, str(exc))
    except RmcliError:  # a fault of the run itself (session, plugin): stops the batch
        raise
    except Exception as exc:
        log.debug(f"{job.label}: internal error", exc_info=True)
        reason = " ".join(str(exc).split()) or "no message"
        return Result(
            job,
            f"{job.label}: internal error: {type(exc).__name__}: {reason} "
            "(RMCLI_DEBUG=1 shows the traceback)",
        )
    return Result(job)


def run_local(
    remover: Masker,
    jobs: Iterable[Job],
    options: OutputOptions,
    stop: threading.Event | None = None,
    clock: Clock = untimed,
) -> Iterator[Result]:
    """Process jobs in this process, ``inflight`` (a setting) at a time, in input order.

    Encoding threads per image come from the session's layout unless ``options`` sets them.
    """
    if options.threads is None:
        options = replace(options, threads=remover.layout.encode_threads)

    def handle(job: Job, timed: Clock) -> Result | None:
        return process_isolated(remover, job, options, timed, stop)

    inflight = remover.settings["inflight"]
    yield from run_pipelined(handle, jobs, stop, inflight=inflight, clock=clock)


def in_input_order(
    pairs: Iterable[tuple[int, Result]], on_done: Callable[[Result], None] | None = None
) -> Iterator[Result]:
    """Results in input order; ``on_done`` is called for each one as soon as it finishes.

    When ``pairs`` ends early (interrupted), the results held back behind a missing one
    still come out, in input order.
    """
    waiting: dict[int, Result] = {}
    next_index = 0
    for index, result in pairs:
        if on_done is not None:
            on_done(result)
        waiting[index] = result
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
    for index in sorted(waiting):
        yield waiting[index]


@dataclass(frozen=True)
class Summary:
    """How a batch ended."""

    written: int
    failed: int
    skipped: int
    not_started: int
    interrupted: bool

    def line(self) -> str:
        """``3 written, 1 skipped (output exists), 1 failed[, 2 not started (interrupted)]``."""
        skip = f", {self.skipped} skipped (output exists)" if self.skipped else ""
        text = f"{self.written} written{skip}, {self.failed} failed"
        if self.interrupted:
            text += f", {self.not_started} not started (interrupted)"
        return text


class Batch:
    """One batch of inputs (files, folders, globs, URLs, ``-``) cut out to ``output``.

    ``output`` is a folder, a storage URL, ``-`` (stdout), None (``NAME.out.png`` beside each
    input), or with one input a file name whose suffix (``.png``, ``.webp``, ``.jpg``) is the
    format unless the format was chosen for this run. ``options`` default to the remover's
    settings; ``executor`` overrides the setting. A :class:`UsageError` says when nothing can
    run (no input, ``-o -`` or an output file with several inputs). ``single_file`` makes
    ``output`` one file whatever its suffix (PNG unless the suffix names a format).
    """

    def __init__(
        self,
        remover: Masker,
        inputs: Sequence[str | Path],
        output: str | Path | None = None,
        *,
        recursive: bool = False,
        options: OutputOptions | None = None,
        executor: str | None = None,
        single_file: bool = False,
    ) -> None:
        settings = remover.settings
        self.remover = remover
        self.options = options or OutputOptions.from_settings(settings)
        check_options(self.options.compose)
        out = str(output) if isinstance(output, Path) else output
        one_file = single_file or naming.is_stream(out)
        file_format = naming.output_file_format(out)
        if file_format is None and one_file and out != STDIO:
            file_format = "png"  # one file whatever its name: PNG
        planned_to = None if file_format else out
        jobs = plan_jobs([str(item) for item in inputs], planned_to, self.options.fmt, recursive)
        if not jobs:
            raise UsageError("no input images found")
        if out == STDIO and len(jobs) > 1:
            raise UsageError("-o - (stdout) takes exactly one input")
        if file_format:
            jobs = self._to_file(jobs, out, file_format)
        jobs = video.plan(jobs, settings, self.options)  # clips: clip.webm, frame folders...
        self.skipped = 0
        self.skipped_jobs: list[Job] = []
        if settings["skip_existing"]:
            kept, self.skipped = without_existing(jobs)
            self.skipped_jobs = [job for job in jobs if job not in kept]
            jobs = kept
        self.jobs: list[Job] = jobs
        source = "" if executor else settings.source("executor")
        self.executor = get_executor(executor or settings["executor"], source)
        self.stats = BatchStats()
        self.stop = Stop()
        self.written = self.failed = 0
        self.pinned: list[int] | None = None

    def _to_file(self, jobs: list[Job], out: str, file_format: str) -> list[Job]:
        """The one job, writing to the file ``out``; the format from its suffix unless the
        format was chosen for this run (a flag, or the Python API)."""
        if len(jobs) != 1:
            raise UsageError(
                f"-o {out} names one file, but there are {len(jobs)} inputs: "
                "give a folder to write several cut-outs"
            )
        if self.remover.settings.layer("output_format") not in (Layer.FLAG, Layer.API):
            self.options = replace(self.options, fmt=file_format)
        return [naming.to_file(jobs[0], out)]

    def prepare(self, pin_caller: bool = False) -> Any:
        """Build the session before the first image when the jobs run in this process, so a
        bad model or backend fails before any work; with ``pin_caller`` pin this thread as the
        layout says (only after the session exists: its workers must not inherit the mask)."""
        if not self.executor.in_process or not self.jobs:
            return None
        session = self.remover.session
        if pin_caller:
            self.pinned = pin_calling_thread(session.layout)
        return session

    def run(
        self, on_done: Callable[[Result], None] | None = None, handle_signals: bool = False
    ) -> Iterator[Result]:
        """Run the jobs; yield each result in input order (``on_done`` sees each as soon as it
        finishes). With ``handle_signals`` (main thread only) SIGINT and SIGTERM stop the batch
        after the started images; a second one aborts them (nothing more is written, the
        results already written still come out); a third raises KeyboardInterrupt."""
        guard = stop_on_signals(self.stop) if handle_signals else nullcontext()
        with guard:
            pairs = self.executor.run(
                self.remover, self.jobs, self.options, self.stop, self.stats.stage
            )
            for result in in_input_order(pairs, on_done):
                failed = result.error is not None
                self.stats.count(failed=failed)
                self.failed += failed
                self.written += not failed
                yield result

    @property
    def summary(self) -> Summary:
        done = self.written + self.failed
        return Summary(
            written=self.written,
            failed=self.failed,
            skipped=self.skipped,
            not_started=len(self.jobs) - done,
            interrupted=self.stop.is_set(),
        )
