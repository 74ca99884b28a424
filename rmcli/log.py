"""rmcli's messages go through ``logging.getLogger("rmcli")`` and its per-module children.

Library code only logs; a program using :class:`rmcli.Remover` can silence or route the
``rmcli`` logger like any other. The command line installs :func:`install_cli_handler`, which
prints ``rmcli: warning: ...`` (and ``rmcli: ...`` for notes) on stderr, each distinct warning
once per process. Output the user asked for (written paths, tables) goes to stdout, not here.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import TextIO

ROOT = "rmcli"


def one_line(text: str) -> str:
    """``text`` as one printable line: JSON-quoted, with every character that is not printable
    escaped, when it holds a line break, a tab, a terminal escape or another such character.
    File names reach messages as they are; this keeps them from splitting or driving a terminal.
    """
    if text.isprintable():
        return text
    quoted = json.dumps(text, ensure_ascii=False)  # escapes C0 controls, quotes and backslashes
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in quoted)


class _CliFormatter(logging.Formatter):
    def __init__(self, color: bool) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        message = one_line(record.getMessage())
        if record.levelno >= logging.ERROR:
            label = "error: "
        elif record.levelno >= logging.WARNING:
            label = "warning: "
        else:
            label = ""
        if self.color and label:
            code = "31" if record.levelno >= logging.ERROR else "33"
            label = f"\x1b[{code};1m{label}\x1b[0m"
        text = f"rmcli: {label}{message}"
        if record.exc_info and os.environ.get("RMCLI_DEBUG"):
            text += "\n" + self.formatException(record.exc_info)
        return text


class _OnceFilter(logging.Filter):
    """Let each distinct warning through once (a batch may meet the same problem often)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (tests and progress bars replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def install_cli_handler(level: int = logging.INFO, color: bool | None = None) -> logging.Handler:
    """Print rmcli's log records on stderr as ``rmcli: warning: ...``; returns the handler.

    ``color`` defaults to: stderr is a terminal and ``NO_COLOR`` is not set.
    """
    remove_cli_handler()
    logger = logging.getLogger(ROOT)
    if color is None:
        color = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    handler = _StderrHandler()
    handler.setFormatter(_CliFormatter(color))
    handler.addFilter(_OnceFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def remove_cli_handler() -> None:
    """Undo :func:`install_cli_handler` (the ``rmcli`` logger is a library's again)."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
