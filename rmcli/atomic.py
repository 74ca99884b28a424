"""Atomic file writes: a temporary file in the same folder, renamed into place when complete.

A temporary file is named ``.rmcli.TTTTTTTT.XXXXXXXX.tmp`` (``.part`` for downloads) beside its
target: ``T`` from the target's name, ``X`` random, so its length never depends on the
target's (a 255-byte name can be written). It gets the mode the target will have: an existing
file keeps its own mode (a config file the user made private stays private), a new one gets
``0o666`` less the umask, like any file a program creates. A process killed half-way leaves
its temporary file behind; the first write into a folder in a later run removes such leftovers
once they are older than :data:`STALE_AFTER_S` (by name pattern and age only, never anything
else).

What :func:`atomic_path` does with a target that is not a plain file:

- a symbolic link is followed: its final target is replaced atomically (a temporary file beside
  the target, keeping the target's mode) and the link stays a link. A link in a shared sticky
  folder (``/tmp``) owned by someone else is not followed, as the kernel's
  ``protected_symlinks`` would not;
- a character device or FIFO (``/dev/null``, a named pipe, a terminal) and a path through
  ``/proc`` (``/dev/stdout``, ``/dev/fd/N``) are written into in place, streaming, never renamed
  over;
- a block device or socket is refused (:class:`OSError`, one line).
"""

from __future__ import annotations

import errno
import hashlib
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
# ".NAME." + 8 characters (older versions: hex or tempfile's [a-z0-9_]) + suffix; ours now:
# ".rmcli.TTTTTTTT.XXXXXXXX" + suffix, which the same pattern matches
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|part)$")
_MAX_LINKS = 40  # as the kernel's ELOOP limit

log = logging.getLogger(__name__)
_swept: set[tuple[str, str]] = set()
_swept_lock = threading.Lock()


def why_unwritable(exc: OSError) -> str:
    """The reason a folder cannot take a file: a file in its way, or the OS's words."""
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a file is in the way of that folder"
    return exc.strerror or str(exc)


def temporary_pattern(path: Path, suffix: str = ".tmp") -> str:
    """The glob pattern of the temporary files made beside ``path`` (all writers)."""
    return f".rmcli.{_tag(Path(path).name)}.*{suffix}"


def _tag(name: str) -> str:
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:8]


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
    tag = _tag(path.name)
    for _ in range(100):
        tmp = path.parent / f".rmcli.{tag}.{secrets.token_hex(4)}{suffix}"
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


def write_target(path: Path) -> tuple[Path, bool]:
    """Where a write to ``path`` goes and whether it goes there in place (streaming) rather
    than by renaming a temporary file over it; see the module's notes. An :class:`OSError`
    when ``path`` is a block device, a socket or a link that is not followed."""
    target, through_proc = _follow_links(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return Path(target), through_proc
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "block device" if stat.S_ISBLK(mode) else "socket"
        raise OSError(
            errno.EINVAL,
            f"a {kind}; rmcli writes only files, character devices (/dev/null) and FIFOs",
        )
    if through_proc or stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return Path(path), True
    return Path(target), False


def _follow_links(path: str) -> tuple[str, bool]:
    """The final target of ``path`` (absolute) and whether the way there passes through
    ``/proc`` (whose links, like ``/dev/stdout``'s, name open files rather than paths)."""
    current = path
    for _ in range(_MAX_LINKS):
        folder = os.path.realpath(os.path.dirname(current))
        current = os.path.join(folder, os.path.basename(current))
        if current == "/proc" or current.startswith("/proc/"):
            return current, True
        try:
            link = os.readlink(current)
        except OSError:  # not a link, or nothing there: the target itself
            return current, False
        _check_followable(current, folder)
        current = os.path.join(folder, link)
    raise OSError(errno.ELOOP, "too many levels of symbolic links")


def _check_followable(link: str, folder: str) -> None:
    """Refuse a link the kernel's ``protected_symlinks`` would not follow: in a sticky,
    world-writable folder, owned neither by us nor by the folder's owner."""
    try:
        here, owner = os.stat(folder), os.lstat(link).st_uid
    except OSError:
        return
    shared = here.st_mode & stat.S_ISVTX and here.st_mode & stat.S_IWOTH
    if shared and owner not in (os.geteuid(), here.st_uid):
        raise OSError(
            errno.EACCES,
            "a symbolic link in a shared sticky folder, owned by another user; not followed",
        )


@contextmanager
def atomic_path(path: Path, before_commit: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``'s target; it replaces the target only if the
    block succeeds (and ``before_commit``, called just before the rename, does not raise).

    A character device, FIFO or ``/proc`` path is yielded itself, to be written into in place.
    """
    target, in_place = write_target(Path(path))
    if in_place:
        yield target
        if before_commit is not None:
            before_commit()
        return
    tmp = temporary_beside(target)
    try:
        yield tmp
        if before_commit is not None:
            before_commit()
        os.replace(tmp, target)
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
