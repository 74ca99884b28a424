"""``rmcli remove --watch``: files copied into the folder after start are cut out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import GIRL, ROOT, alpha_of


def test_watch_processes_a_file_copied_in_after_start(u2netp_path, tmp_path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", "--watch", str(tmp_path / "in"), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ,
    )
    err_lines: list[str] = []
    reader = threading.Thread(
        target=lambda: err_lines.extend(line.decode() for line in process.stderr), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 90
    try:
        while not any("watching" in line for line in err_lines):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"the watch did not start: {err_lines}")
            time.sleep(0.1)
        data = GIRL.read_bytes()
        with open(tmp_path / "in" / "late.jpg", "wb") as handle:  # written in two steps
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.2)
            handle.write(data[len(data) // 2 :])
        (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
        while not (out / "late.png").exists() or not any("broken.jpg" in x for x in err_lines):
            if time.monotonic() > deadline:
                pytest.fail(f"the copied files were not processed: {err_lines}")
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        stdout = process.stdout.read()
        process.wait(timeout=60)
        reader.join(timeout=10)
    err = "".join(err_lines)
    assert process.returncode == 1, err  # one input failed
    assert stdout.decode().split() == [str(out / "late.png")]
    assert "1 written, 1 failed (watch ended)" in err
    reference = alpha_of(ROOT / "tests" / "data" / "rembg-u2netp" / "girl-1.alpha.png")
    assert np.abs(alpha_of(out / "late.png") - reference).mean() <= 0.5
