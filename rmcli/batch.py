"""Running jobs: each input becomes an output file (or stdout), errors are per input."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from rmcli.compose import ComposeOptions, compose
from rmcli.cpus import usable_cpu_count
from rmcli.errors import InputError
from rmcli.imaging import encode, load_image, write_image
from rmcli.inputs import Job
from rmcli.pipeline import Clock, run_pipelined, untimed
from rmcli.remover import Remover
from rmcli.stats import active_clock


@dataclass(frozen=True)
class OutputOptions:
    """How results are written."""

    fmt: str = "png"
    png_compression: int = 1
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    threads: int | None = None  # threads one image may use to encode; None: cores / inflight


@dataclass(frozen=True)
class Result:
    """What happened to one job: ``error`` is None when its output was written."""

    job: Job
    error: str | None = None


def process(remover: Remover, job: Job, options: OutputOptions, clock: Clock = untimed) -> None:
    """Read, cut out and write one job; an unusable input raises :class:`InputError`.

    ``clock(stage)`` wraps each stage: decode, preprocess, inference, postprocess, encode.
    """
    if job.error:
        raise InputError(f"{job.label}: {job.error}")
    with clock("decode"):
        source = sys.stdin.buffer.read() if job.source is None else job.source
        image = load_image(source, job.label, remover.settings["max_pixels"], _note)
    mask = remover.mask_of(image, clock)
    with clock("postprocess"):
        # the image is ours: the mask may become its alpha channel without a copy
        result = compose(image, mask, options.compose, options.fmt, in_place=True)
        del image, mask
    threads = options.threads or 1
    with clock("encode"):
        if job.output is None:
            data = encode(result, options.fmt, options.png_compression, threads)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        try:
            write_image(result, job.output, options.fmt, options.png_compression, threads)
        except OSError as exc:
            reason = exc.strerror or exc
            raise InputError(f"{job.label}: cannot write {job.output}: {reason}") from None


def _note(message: str) -> None:
    print(f"rmcli: note: {message}", file=sys.stderr)


def run_local(
    remover: Remover,
    jobs: Iterable[Job],
    options: OutputOptions,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
) -> Iterator[Result]:
    """Process jobs in this process, ``inflight`` (a setting) at a time, yielding results in
    input order (see :mod:`rmcli.pipeline`).

    Once ``stop`` is set (see :mod:`rmcli.interrupt`) no further job is started. ``clock``
    times the stages (default: the stats being collected, see :mod:`rmcli.stats`).
    """
    if clock is None:
        clock = active_clock()
    inflight = remover.settings["inflight"]
    if options.threads is None:
        options = replace(options, threads=max(1, usable_cpu_count() // inflight))
    yield from run_pipelined(remover, jobs, options, stop, inflight=inflight, clock=clock)
