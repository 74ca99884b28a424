"""Turning command-line inputs (files, globs, folders, ``-``) into jobs; their outputs are
named by :mod:`rmcli.images.naming`."""

from __future__ import annotations

import glob
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmcli.contracts.jobs import Job, Location
from rmcli.images import storage
from rmcli.images.imaging import IMAGE_SUFFIXES, input_suffixes
from rmcli.images.naming import OWN_OUTPUT, STDIO, output_for, output_key

log = logging.getLogger(__name__)


def images_in(folder: Path, recursive: bool) -> list[Path]:
    """Entries named like images; a FIFO or broken link is kept so it is reported, not skipped."""
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in folder.glob(pattern) if not p.is_dir() and p.suffix.lower() in input_suffixes()
    )


def _note_sub_folders(folder: Path, out_dir: Path | None) -> None:
    """Say how many images a folder scan without ``-r`` leaves in sub-folders (rmcli's own
    outputs there are not counted)."""
    below = [p for p in images_in(folder, True) if p.parent != folder]
    below = _not_own_outputs(below, folder, out_dir, str(folder), {})
    if below:
        log.info(f"note: {folder}: {len(below)} image(s) in sub-folders skipped; add -r")


def _glob_root(pattern: str) -> Path:
    """The folder a glob searches under: its leading components without wildcards."""
    fixed: list[str] = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _not_own_outputs(
    files: list[Path], root: Path, out_dir: Path | None, arg: str, skipped: dict[str, int]
) -> list[Path]:
    """``files`` found by scanning ``root`` less what rmcli itself wrote there: ``*.out.*``
    files, and anything inside the output folder when that folder lies under ``root``."""
    inside: Path | None = None
    if out_dir is not None:
        out_resolved, root_resolved = out_dir.resolve(), root.resolve()
        if root_resolved in out_resolved.parents:
            inside = out_resolved
    kept = []
    for path in files:
        if OWN_OUTPUT.search(path.name) or (
            inside is not None and inside in path.resolve().parents
        ):
            skipped[arg] = skipped.get(arg, 0) + 1
        else:
            kept.append(path)
    return kept


def expand(
    args: list[str],
    recursive: bool = False,
    out_dir: Path | None = None,
    skipped: dict[str, int] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Each argument as ``(label, path, root)``: root is the folder it was found under, if any.

    A path of None is standard input; a missing file or a glob matching nothing is kept
    (with a None root) so it is reported as a failed input. URLs stay strings. Folder scans
    and globs leave out this tool's own outputs (see :func:`_not_own_outputs`), counted per
    argument in ``skipped``; a file named explicitly is always taken.
    """
    found: list[tuple[str, Any, Any]] = []
    skipped = {} if skipped is None else skipped
    for arg in args:
        if arg == STDIO:
            found.append(("<stdin>", None, None))
            continue
        if storage.is_url(arg):
            found.extend(storage.expand_url(arg, IMAGE_SUFFIXES, recursive))
            continue
        path = Path(arg)
        if path.is_dir():
            files = _not_own_outputs(images_in(path, recursive), path, out_dir, arg, skipped)
            found.extend((str(p), p, path) for p in files)
            if not recursive:
                _note_sub_folders(path, out_dir)
        elif path.exists() or not glob.has_magic(arg):
            found.append((arg, path, None))
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            files = [Path(m) for m in matches if not Path(m).is_dir()]  # FIFOs get reported
            files = _not_own_outputs(files, _glob_root(arg), out_dir, arg, skipped)
            if not files and arg not in skipped:
                found.append((arg, path, None))
            found.extend((str(p), p, None) for p in files)
    return found


def plan_jobs(
    args: list[str],
    out_dir: Location | None,
    fmt: str,
    recursive: bool = False,
    notice: Callable[[str], None] | None = None,
) -> list[Job]:
    """Jobs for every input, in order; clashing or self-overwriting outputs become errors.

    ``out_dir`` is a folder path, a storage URL, ``-`` (standard output) or None (beside).
    The same file reached twice (named twice, overlapping globs) is one job. ``notice``
    (default: a logged note) hears how many of this tool's own outputs a scan left out.
    """
    to_stdout = out_dir is not None and str(out_dir) == STDIO
    target_dir = None if to_stdout else out_dir
    if isinstance(target_dir, str) and not storage.is_url(target_dir):
        target_dir = Path(target_dir)
    jobs: list[Job] = []
    taken: dict[Location, str] = {}
    skipped: dict[str, int] = {}
    local_out = target_dir if isinstance(target_dir, Path) else None
    found = expand(args, recursive, local_out, skipped)
    for arg, count in skipped.items():
        (notice or _note)(
            f"{arg}: left out {count} file(s) rmcli wrote itself (*.out.* files, or files "
            "in the output folder)"
        )
    inputs: dict[Location, str] = {}
    unique = []
    for label, source, root in found:
        if source is not None:
            key = output_key(source)
            if key in inputs:
                continue  # the same file again: one job
            inputs[key] = label
        unique.append((label, source, root))
    for label, source, root in unique:
        output = output_for(source, root, target_dir, fmt, to_stdout)
        error = None
        if source is not None and not _exists(source):
            error = "no such file" if not glob.has_magic(label) else "no file matches"
        elif output is not None:
            key = output_key(output)
            if source is not None and key == output_key(source):
                error = f"output {output} would overwrite the input"
            elif key in inputs:
                error = f"output {output} would overwrite the input {inputs[key]}"
            elif key in taken:
                error = f"output {output} is already the output of {taken[key]}"
            else:
                taken[key] = label
        jobs.append(Job(label, source, output, error))
    return jobs


def _note(message: str) -> None:
    log.info(f"note: {message}")


def without_existing(jobs: list[Job]) -> tuple[list[Job], int]:
    """``jobs`` less those whose output file already exists, and how many were left out."""
    todo = [j for j in jobs if j.error or j.output is None or not _exists(j.output)]
    return todo, len(jobs) - len(todo)


def _exists(location: Location) -> bool:
    if storage.is_url(location):
        return storage.exists(location)
    return location.exists() or location.is_symlink()
