"""Running the ``rmcli`` command: in a subprocess, as a user would, or in this process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from click.testing import CliRunner


def rmcli(*args: str, env: dict | None = None, stdin: bytes | None = None, cwd=None):
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        cwd=cwd,
    )


def rmcli_here(*args: str, env: dict | None = None, stdin: bytes | None = None, cwd=None):
    """The same run in this process (Click's test runner: ``main()`` with these arguments,
    environment and standard streams), for behaviour that is not about the process itself.
    Answers like :func:`rmcli`: ``returncode``, ``stdout`` and ``stderr`` bytes."""
    from rmcli.cli import main

    runner = CliRunner()
    code = 0
    with contextlib.ExitStack() as stack:
        out, err, _ = stack.enter_context(runner.isolation(input=stdin, env=env))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        argv, sys.argv = sys.argv, ["rmcli", *args]
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue(), err.getvalue()
    return subprocess.CompletedProcess(["rmcli", *args], code, stdout, stderr)
