"""Where results go: the one table of output formats and suffixes, and every output name.

``rmcli remove`` writes ``NAME.out.png`` beside an input, ``DIR/<sub-folders>/NAME.png`` under
``-o DIR`` (a folder or a storage URL), one named file (``-o cut.webp``, ``/dev/stdout``, a
FIFO), or standard output (``-o -``); a clip gets its format's suffix (``clip.webm``) or a
folder of numbered frames. Every front end and the video pipeline ask this module.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rmcli.contracts.jobs import Job, Location
from rmcli.errors import InputError
from rmcli.images import storage

STDIO = "-"  # standard input as an input, standard output as ``-o``

# output format -> suffix of the written file
FORMAT_SUFFIX = {
    **{"png": ".png", "webp": ".webp", "jpg": ".jpg"},
    **{"webm": ".webm", "mov": ".mov", "mp4": ".mp4", "gif": ".gif"},
}
CLIP_ONLY_FORMATS = frozenset({"webm", "mov", "mp4", "gif"})  # never written for still images
FRAME_FOLDER_FORMATS = frozenset({"png", "jpg"})  # a clip in these: a folder of numbered frames
# suffix of ``-o FILE`` -> the format it names
SUFFIX_FORMAT = {suffix: fmt for fmt, suffix in FORMAT_SUFFIX.items()} | {".jpeg": "jpg"}

# What ``rmcli remove`` writes beside an input: NAME.out.png, .webp, .jpg (and clip formats)
_OUTPUT_SUFFIXES = "|".join(re.escape(suffix) for suffix in FORMAT_SUFFIX.values())
OWN_OUTPUT = re.compile(rf"\.out({_OUTPUT_SUFFIXES})$", re.IGNORECASE)


def clip_suffix(fmt: str) -> str:
    """The suffix of a clip written as ``fmt``; "" for a folder of numbered frames."""
    return "" if fmt in FRAME_FOLDER_FORMATS else FORMAT_SUFFIX[fmt]


def output_key(location: Location) -> Location:
    """What identifies a location when comparing outputs with inputs and with each other."""
    return location if storage.is_url(location) else Path(location).resolve()


def output_for(
    source: Location | None,
    root: Location | None,
    out_dir: Location | None,
    fmt: str,
    to_stdout: bool,
) -> Location | None:
    """Where the result of ``source`` goes: ``DIR/<sub-folders>/<stem>.<fmt>`` or beside it."""
    suffix = FORMAT_SUFFIX[fmt]
    if to_stdout or source is None and out_dir is None:
        return None
    if source is None:
        name = f"stdin{suffix}"
        return storage.join(out_dir, name) if storage.is_url(out_dir) else out_dir / name
    url = storage.is_url(source)
    stem = storage.stem(source) if url else source.stem
    if out_dir is None:
        name = f"{stem}.out{suffix}"
        return storage.sibling(source, name) if url else source.with_name(name)
    if root is None:
        relative: tuple[str, ...] = ()
    elif url:
        relative = storage.relative_parent(source, root)
    else:
        relative = source.parent.relative_to(root).parts
    if storage.is_url(out_dir):
        return storage.join(out_dir, *relative, f"{stem}{suffix}")
    return out_dir.joinpath(*relative, f"{stem}{suffix}")


def output_file_format(output: str | None) -> str | None:
    """The format when ``output`` names one image file (an image suffix, not a folder)."""
    if output is None or output == STDIO:
        return None
    suffix = Path(output.rstrip("/")).suffix.lower()
    if suffix not in SUFFIX_FORMAT or output.endswith("/"):
        return None
    if not storage.is_url(output) and Path(output).is_dir():
        return None
    return SUFFIX_FORMAT[suffix]


def is_stream(output: str | None) -> bool:
    """True when ``output`` is a character device, a FIFO or standard output: one file to
    write into (``-o /dev/null``), never a folder, whatever its name."""
    if output is None or output == STDIO or storage.is_url(output):
        return False
    try:
        mode = os.stat(output).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or _is_stdout(Path(output))


def _is_stdout(path: Path) -> bool:
    """True when ``path`` is this process's standard output (``/dev/stdout``, ``/dev/fd/1``,
    the terminal or pipe it is): written there, the cut-out must not be followed by a path."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such file; stdout closed or replaced
        return False


def to_file(job: Job, out: str) -> Job:
    """``job`` writing to the one file ``out`` (``/dev/stdout`` and the like: as ``-o -``)."""
    target: Location = out if storage.is_url(out) else Path(out)
    if isinstance(target, Path) and _is_stdout(target):
        return replace(job, output=None)
    if job.error is None and job.source is not None and _same_file(job.source, target):
        return replace(job, output=target, error=f"output {out} would overwrite the input")
    return replace(job, output=target)


def _same_file(source: Location, target: Location) -> bool:
    if storage.is_url(source) or storage.is_url(target):
        return str(source) == str(target)
    return Path(source).resolve() == Path(target).resolve()


def clip_output(job: Job, fmt: str, planned_fmt: str) -> Path:
    """Where a clip goes: the job's output with the suffix of ``fmt`` (for frames, a folder
    named like the output without suffix), unless :func:`clip_outputs` already renamed it."""
    output = job.output
    if output is None:
        raise InputError(
            f"{job.label}: a clip cannot be written to standard output; give -o FOLDER "
            "(or pipe raw frames through rmcli b)"
        )
    if storage.is_url(output):
        raise InputError(f"{job.label}: clips are written to local folders only, not {output}")
    target = Path(output)
    if target.suffix == FORMAT_SUFFIX.get(planned_fmt):  # as planned for a still image
        target = target.with_suffix(clip_suffix(fmt))
    if job.source is not None and target.resolve() == Path(job.source).resolve():
        raise InputError(f"{job.label}: output {target} would overwrite the input")
    return target


def clip_outputs(
    jobs: list[Job], clip_format: Callable[[Job], str | None], planned_fmt: str
) -> list[Job]:
    """``jobs`` with each clip's output renamed for the format ``clip_format(job)`` gives it
    (None: not a clip), so that what is printed, skipped or refused as a clash is the real
    output. Jobs already in error, from standard input or from a URL are left as they are."""
    planned = []
    taken = {output_key(j.output) for j in jobs if j.output is not None and not j.error}
    for job in jobs:
        if job.error or job.source is None or storage.is_url(job.source):
            planned.append(job)
            continue
        fmt = clip_format(job)
        if fmt is None:
            planned.append(job)
            continue
        try:
            target = clip_output(job, fmt, planned_fmt)
        except InputError as exc:
            planned.append(replace(job, error=str(exc).removeprefix(f"{job.label}: ")))
            continue
        if target == job.output:
            planned.append(job)
            continue
        error = None
        if output_key(target) in taken:
            error = f"output {target} is already the output of another input"
        if job.output is not None:
            taken.discard(output_key(job.output))
        taken.add(output_key(target))
        planned.append(replace(job, output=target, error=error))
    return planned
