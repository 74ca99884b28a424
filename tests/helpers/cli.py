"""Running the real ``rmcli`` command, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def rmcli(*args: str, env: dict | None = None, stdin: bytes | None = None, cwd=None):
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        cwd=cwd,
    )
