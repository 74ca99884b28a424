"""Inputs and outputs on any fsspec storage: ``s3://``, ``gs://``, ``file://``, ``memory://``...

A location is a local :class:`~pathlib.Path` or a URL string (``scheme://...``). URLs need the
optional ``fsspec`` package (``pip install 'rmcli[storage]'``) plus the filesystem's own package
(``s3fs``, ``gcsfs``...). Writes never leave a half-written output: local files are renamed into
place, object stores receive one whole PUT, other filesystems get a temporary name moved into
place. A rewrite of the same output (a retried Dask chunk) replaces it whole.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

from rmcli.errors import InputError, UsageError
from rmcli.extras import pip_install

URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
# Where one write call is all-or-nothing: the object appears whole or not at all.
WHOLE_OBJECT_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"}


def is_url(location: Any) -> bool:
    """True for a ``scheme://`` string (not for a local path)."""
    return isinstance(location, str) and bool(URL.match(location))


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it; :class:`UsageError` if unusable."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise UsageError(f"{url}: storage URLs need fsspec: {pip_install('storage')}") from None
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. "Install s3fs to access S3"
        raise UsageError(f"{url}: {exc}") from None


def _split(url: str) -> tuple[str, PurePosixPath]:
    scheme, rest = url.split("://", 1)
    return scheme, PurePosixPath(rest)


def stem(url: str) -> str:
    return _split(url)[1].stem


def sibling(url: str, name: str) -> str:
    """``name`` in the same folder as ``url``."""
    scheme, path = _split(url)
    return f"{scheme}://{path.with_name(name)}"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a folder URL."""
    return "/".join([base.rstrip("/"), *parts])


def relative_parent(url: str, root: str) -> tuple[str, ...]:
    """The sub-folders between ``root`` and the folder holding ``url``."""
    fs, path = filesystem(url)
    root_path = fs._strip_protocol(root)
    return PurePosixPath(path).parent.relative_to(PurePosixPath(root_path)).parts


def expand_url(url: str, suffixes: set[str], recursive: bool) -> list[tuple[str, str, str | None]]:
    """A URL argument as ``(label, url, root)`` triples, like local files, folders and globs."""
    fs, path = filesystem(url)
    if fs.isdir(path):
        found = fs.find(path, maxdepth=None if recursive else 1)
        root: str | None = url
    elif fs.exists(path) or not any(c in path for c in "*?["):
        return [(url, url, None)]
    else:
        found = fs.glob(path)
        root = None
    urls = [
        fs.unstrip_protocol(p) for p in sorted(found) if PurePosixPath(p).suffix.lower() in suffixes
    ]
    return [(u, u, root) for u in urls] or [(url, url, None)]


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.isfile(path)


def read_bytes(url: str, label: str) -> bytes:
    """The content of ``url``; failures are an :class:`InputError` naming ``label``."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{label}: cannot read: {exc}") from None


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole (creating folders), replacing any earlier content."""
    from rmcli.atomic import atomic_write_bytes

    fs, path = filesystem(url)
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if "file" in protocols:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        return
    parent = str(PurePosixPath(path).parent)
    fs.makedirs(parent, exist_ok=True)
    if protocols & WHOLE_OBJECT_PROTOCOLS:
        fs.pipe_file(path, data)
        return
    temporary = f"{parent}/.{PurePosixPath(path).name}.{uuid.uuid4().hex[:8]}.tmp"
    fs.pipe_file(temporary, data)
    try:
        fs.mv(temporary, path)
    finally:
        if fs.exists(temporary):
            fs.rm(temporary)
