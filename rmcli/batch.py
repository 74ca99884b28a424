"""Running jobs: each input becomes an output file (or stdout), errors are per input."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rmcli.compose import ComposeOptions, compose
from rmcli.errors import InputError
from rmcli.imaging import encode, load_image, write_image
from rmcli.inputs import Job
from rmcli.remover import Remover


@dataclass(frozen=True)
class OutputOptions:
    """How results are written."""

    fmt: str = "png"
    png_compression: int = 1
    compose: ComposeOptions = field(default_factory=ComposeOptions)


@dataclass(frozen=True)
class Result:
    """What happened to one job: ``error`` is None when its output was written."""

    job: Job
    error: str | None = None


def process(remover: Remover, job: Job, options: OutputOptions) -> None:
    """Read, cut out and write one job; an unusable input raises :class:`InputError`."""
    if job.error:
        raise InputError(f"{job.label}: {job.error}")
    source = sys.stdin.buffer.read() if job.source is None else job.source
    image = load_image(source, job.label, remover.settings["max_pixels"], _note)
    result = compose(image, remover.mask_of(image), options.compose, options.fmt)
    if job.output is None:
        sys.stdout.buffer.write(encode(result, options.fmt, options.png_compression))
        sys.stdout.buffer.flush()
        return
    try:
        write_image(result, job.output, options.fmt, options.png_compression)
    except OSError as exc:
        raise InputError(f"{job.label}: cannot write {job.output}: {exc.strerror or exc}") from None


def _note(message: str) -> None:
    print(f"rmcli: note: {message}", file=sys.stderr)


def run_local(
    remover: Remover,
    jobs: Iterable[Job],
    options: OutputOptions,
    stop: threading.Event | None = None,
) -> Iterator[Result]:
    """Process jobs one after another in this process, yielding results in input order.

    Once ``stop`` is set (see :mod:`rmcli.interrupt`) no further job is started.
    """
    for job in jobs:
        if stop is not None and stop.is_set():
            return
        try:
            process(remover, job, options)
        except InputError as exc:
            yield Result(job, str(exc))
        else:
            yield Result(job)
