"""The progress bar as a user sees it: ``rmcli remove`` in a real terminal (a tmux pane), the
screen read back while it runs. Written paths print above the bar, never on its line, and the
rate appears only once an image is done, never absurdly high."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from helpers import EXAMPLES

BAR = "━"
RATE = re.compile(r"(\d+)/(\d+) ([\d.]+) images/s")

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"
)


def _tmux(socket: str, *args: str) -> str:
    done = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True)
    return done.stdout


def test_paths_print_above_the_bar_and_the_rate_is_sane(u2netp_path, tmp_path):
    shutil.copytree(EXAMPLES, tmp_path / "pin")
    inputs = sorted(p.stem for p in (tmp_path / "pin").glob("*.jpg"))
    env = {k: v for k, v in os.environ.items() if k.startswith("RMCLI_")}
    command = (
        f"cd {shlex.quote(str(tmp_path))} && "
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        + f" {shlex.quote(sys.executable)} -m rmcli remove pin -r -o o7;"
        + " echo $? > exit-code; sleep 600"  # the pane stays, to be read, until kill-server
    )
    socket = f"rmcli-test-{os.getpid()}-{tmp_path.name}"
    _tmux(socket, "new-session", "-d", "-x", "120", "-y", "30", "-s", "t", "sh", "-c", command)
    screens: list[tuple[float, list[str]]] = []
    started = time.monotonic()
    try:
        while not (tmp_path / "exit-code").exists() and time.monotonic() - started < 600:
            screens.append((time.monotonic(), _tmux(socket, "capture-pane", "-p", "-t", "t")))
            time.sleep(0.1)
        wall = time.monotonic() - started
        time.sleep(0.3)
        last = _tmux(socket, "capture-pane", "-p", "-t", "t").splitlines()
    finally:
        _tmux(socket, "kill-server")
    assert (tmp_path / "exit-code").read_text().strip() == "0", "\n".join(last)
    lines = [line for _, screen in screens for line in screen.splitlines()]
    assert any(BAR in line and f"/{len(inputs)}" in line for line in lines), "no bar was seen"
    mixed = [line for line in lines if BAR in line and "o7/" in line]
    assert not mixed, f"a written path landed on the bar's line: {mixed[0]!r}"
    for done, total, rate in (m.groups() for line in lines if (m := RATE.search(line))):
        assert int(done) >= 1  # no rate before the first image is done
        # the rate is images per second since the bar started: never far above the whole
        # run's average (a rate measured over two images that finish together is)
        assert float(rate) <= 10 * int(total) / wall, f"absurd rate {rate} images/s"
    # after the run: every written path on a line of its own, the bar gone, the summary
    assert [line for line in last if line.startswith("o7/")] == [f"o7/{s}.png" for s in inputs]
    assert not any(BAR in line for line in last)
    assert f"{len(inputs)} written, 0 failed" in last
