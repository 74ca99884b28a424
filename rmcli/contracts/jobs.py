"""Jobs and results: one input, where its output goes, and what happened to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

Location = Path | str  # a local path, or a storage URL string (fsspec)


@dataclass(frozen=True)
class Job:
    """One input and where its result goes; ``error`` is set when it cannot even be planned."""

    label: str
    source: Location | None  # None: standard input
    output: Location | None  # None: standard output
    error: str | None = None


@dataclass(frozen=True)
class Result:
    """What happened to one job: ``error`` is None when its output was written."""

    job: Job
    error: str | None = None
