"""Commands that only describe things start instantly: no onnxruntime, numpy or Pillow import."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("onnxruntime", "numpy", "PIL")


def imported_modules(*args: str) -> set[str]:
    """Top-level modules a real ``python -X importtime -m rmcli ARGS`` run imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rmcli", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "rmcli" in names  # the report really lists what was imported
    return names


@pytest.mark.parametrize(
    "args",
    [("--help",), ("remove", "--help"), ("backends",), ("models", "list"), ("plugins",)],
    ids=" ".join,
)
def test_describing_commands_import_no_heavy_module(args):
    heavy = imported_modules(*args) & set(HEAVY)
    assert not heavy, f"rmcli {' '.join(args)} imported {sorted(heavy)}"
