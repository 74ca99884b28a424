"""Atomic file writes: a temporary file in the same folder, renamed into place when complete.

A temporary file is named ``.NAME.XXXXXXXX.tmp`` (``.part`` for downloads) beside its target.
It gets the mode the target will have: an existing file keeps its own mode (a config file the
user made private stays private), a new one gets ``0o666`` less the umask, like any file a
program creates. A process killed half-way leaves its temporary file behind; the first write
into a folder in a later run removes such leftovers once they are older than
:data:`STALE_AFTER_S` (by name pattern and age only, never anything else).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STALE_AFTER_S = 3600.0  # a live writer touches its temporary file far more often than this
# ".NAME." + 8 characters (ours: hex; older versions: tempfile's [a-z0-9_]) + suffix
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|part)$")

log = logging.getLogger(__name__)
_swept: set[tuple[str, str]] = set()
_swept_lock = threading.Lock()


def why_unwritable(exc: OSError) -> str:
    """The reason a folder cannot take a file: a file in its way, or the OS's words."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a file is in the way of that folder"
    return exc.strerror or str(exc)


def temporary_beside(path: Path, suffix: str = ".tmp") -> Path:
    """Create an empty, hidden temporary file beside ``path``; its mode is the one ``path``
    has (when it exists) or ``0o666`` less the umask."""
    path = Path(path)
    sweep_stale(path.parent, suffix)
    try:
        keep: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            # the kernel applies the umask to 0o666; an existing file's mode is set exactly
            fd = os.open(tmp, flags, 0o600 if keep is not None else 0o666)
        except FileExistsError:
            continue
        try:
            if keep is not None:
                os.fchmod(fd, keep)
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: Path, before_commit: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds
    (and ``before_commit``, called just before the rename, does not raise)."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        yield tmp
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sweep_stale(folder: Path, suffix: str = ".tmp", max_age_s: float = STALE_AFTER_S) -> int:
    """Remove this tool's temporary files in ``folder`` older than ``max_age_s``, once per
    folder and suffix in a process; returns how many were removed.

    Only hidden regular files named ``.NAME.XXXXXXXX`` + ``suffix`` are candidates; nothing
    is followed through a symbolic link and errors are ignored (best effort).
    """
    key = (os.path.abspath(folder), suffix)
    with _swept_lock:
        if key in _swept:
            return 0
        _swept.add(key)
    removed = 0
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.endswith(suffix) or not _TEMPORARY.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > max_age_s:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            continue
    if removed:
        log.info("removed %d stale temporary file(s) in %s", removed, folder)
    return removed
