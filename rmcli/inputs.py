"""Turning command-line inputs (files, globs, folders, ``-``) into jobs with output paths."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from rmcli.imaging import FORMAT_SUFFIX, IMAGE_SUFFIXES

STDIO = "-"


@dataclass(frozen=True)
class Job:
    """One input and where its result goes; ``error`` is set when it cannot even be planned."""

    label: str
    source: Path | None  # None: standard input
    output: Path | None  # None: standard output
    error: str | None = None


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Entries named like images; a FIFO or broken link is kept so it is reported, not skipped."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if not p.is_dir() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def expand(args: list[str], recursive: bool = False) -> list[tuple[str, Path | None, Path | None]]:
    """Each argument as ``(label, path, root)``: root is the folder it was found under, if any.

    A path of None is standard input; a missing file or a glob matching nothing is kept
    (with a None root) so it is reported as a failed input.
    """
    found: list[tuple[str, Path | None, Path | None]] = []
    for arg in args:
        if arg == STDIO:
            found.append(("<stdin>", None, None))
            continue
        path = Path(arg)
        if path.is_dir():
            found.extend((str(p), p, path) for p in _images_in(path, recursive))
        elif path.exists() or not glob.has_magic(arg):
            found.append((arg, path, None))
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                found.append((arg, path, None))
            found.extend((str(p), p, None) for p in files)
    return found


def output_for(
    source: Path | None, root: Path | None, out_dir: Path | None, fmt: str, to_stdout: bool
) -> Path | None:
    """Where the result of ``source`` goes: ``DIR/<sub-folders>/<stem>.<fmt>`` or beside it."""
    suffix = FORMAT_SUFFIX[fmt]
    if to_stdout or source is None and out_dir is None:
        return None
    if source is None:
        return out_dir / f"stdin{suffix}"
    if out_dir is None:
        return source.with_name(f"{source.stem}.out{suffix}")
    relative = source.parent.relative_to(root) if root is not None else Path()
    return out_dir / relative / f"{source.stem}{suffix}"


def plan_jobs(
    args: list[str], out_dir: Path | None, fmt: str, recursive: bool = False
) -> list[Job]:
    """Jobs for every input, in order; clashing or self-overwriting outputs become errors."""
    to_stdout = out_dir is not None and str(out_dir) == STDIO
    target_dir = None if to_stdout else out_dir
    jobs: list[Job] = []
    taken: dict[Path, str] = {}
    found = expand(args, recursive)
    inputs = {source.resolve(): label for label, source, _ in found if source is not None}
    for label, source, root in found:
        output = output_for(source, root, target_dir, fmt, to_stdout)
        error = None
        if source is not None and not source.exists() and not source.is_symlink():
            error = "no such file" if not glob.has_magic(label) else "no file matches"
        elif output is not None:
            key = output.resolve()
            if source is not None and key == source.resolve():
                error = f"output {output} would overwrite the input"
            elif key in inputs:
                error = f"output {output} would overwrite the input {inputs[key]}"
            elif key in taken:
                error = f"output {output} is already the output of {taken[key]}"
            else:
                taken[key] = label
        jobs.append(Job(label, source, output, error))
    return jobs


def without_existing(jobs: list[Job]) -> tuple[list[Job], int]:
    """``jobs`` less those whose output file already exists, and how many were left out."""
    todo = [j for j in jobs if j.error or j.output is None or not j.output.exists()]
    return todo, len(jobs) - len(todo)
