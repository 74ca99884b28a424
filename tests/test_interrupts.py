"""Killed or interrupted batches leave only complete outputs; Ctrl-C stops cleanly with 130."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers.torture import photo
from PIL import Image

from rmcli.engine.interrupt import stop_on_signals as stop_on_interrupt

COUNT = 20


def _folder_of_photos(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(COUNT):
        photo(480, 360, seed=i).save(folder / f"photo-{i:02d}.jpg", quality=90)
    return sorted(p.stem for p in folder.iterdir())


def _start(tmp_path, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", "in", "-o", "out", *extra],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _check_outputs(out_dir, stems) -> list[str]:
    """Every visible file is a complete image named after an input; returns their names."""
    visible = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith("."))
    for name in visible:
        assert name.removesuffix(".png") in stems, name
        with Image.open(out_dir / name) as image:
            image.load()  # raises on a truncated file
            assert image.mode == "RGBA" and image.size == (480, 360)
    return visible


def test_sigkill_mid_batch_leaves_only_complete_outputs(u2netp_path, tmp_path):
    stems = _folder_of_photos(tmp_path)
    process = _start(tmp_path)
    first = process.stdout.readline()  # the first output has been renamed into place
    assert first.strip() == "out/photo-00.png", process.stderr.read()
    time.sleep(0.1)  # somewhere inside a later image: decoding, inference or writing
    process.kill()
    process.wait()
    visible = _check_outputs(tmp_path / "out", stems)
    assert 1 <= len(visible) < COUNT
    hidden = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    ours = r"\.rmcli\.[0-9a-f]{8}\.[0-9a-f]{8}\.tmp"  # a temporary file: fixed-length name
    assert all(re.fullmatch(ours, name) for name in hidden), hidden
    process.stdout.close()
    process.stderr.close()


def test_sigint_finishes_the_current_image_stops_with_130_and_skip_existing_resumes(
    u2netp_path, tmp_path
):
    stems = _folder_of_photos(tmp_path)
    process = _start(tmp_path)
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    # read the rest through the same buffered pipes: readline() may have buffered more lines
    # (images finish close together in the pipeline), which communicate() would skip
    rest, stderr = process.stdout.read(), process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    assert process.returncode == 130, stderr
    printed = [first.strip(), *rest.split()]
    visible = _check_outputs(tmp_path / "out", stems)
    assert [f"out/{name}" for name in visible] == printed
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    lines = stderr.splitlines()
    assert "rmcli: interrupted: finishing the started images" in lines[0]
    left = COUNT - len(printed)
    assert lines[-1] == f"{len(printed)} written, 0 failed, {left} not started (interrupted)"
    assert len(printed) < COUNT

    out = tmp_path / "out"
    first_run = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    resumed = subprocess.run(
        [sys.executable, "-m", "rmcli", "remove", "in", "-o", "out", "--skip-existing"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(resumed.stdout.split()) == left
    assert resumed.stderr.splitlines()[-1] == (
        f"{left} written, {len(printed)} skipped (output exists), 0 failed"
    )
    assert len(_check_outputs(out, stems)) == COUNT
    assert {name: (out / name).stat().st_mtime_ns for name in first_run} == first_run


def test_first_ctrl_c_sets_the_stop_event_second_one_stops_at_once():
    stop = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), stop_on_interrupt(stop):
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.is_set()
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted by the second Ctrl-C
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_on_the_only_image_finishes_it_and_exits_130_with_a_summary(
    u2netp_path, matting_compiled, tmp_path
):
    photo(1600, 1200, seed=3).save(tmp_path / "big.jpg", quality=90)
    process = subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", "big.jpg", "-o", "out", "-a"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(2.5)  # inside the one image (matting takes seconds)
    process.send_signal(signal.SIGTERM)  # what containers and services send
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == "1 written, 0 failed, 0 not started (interrupted)"
    assert stdout.split() == ["out/big.png"]
    _check_image = Image.open(tmp_path / "out" / "big.png")
    _check_image.load()


def test_second_ctrl_c_writes_nothing_more_and_lists_exactly_what_was_written(
    u2netp_path, tmp_path
):
    stems = _folder_of_photos(tmp_path)
    process = _start(tmp_path, "--inflight", "3")
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    rest, stderr = process.stdout.read(), process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    time.sleep(1)  # nothing may appear after the exit
    printed = [first.strip(), *rest.split()]
    assert process.returncode == 130, stderr
    visible = _check_outputs(tmp_path / "out", stems)
    assert [f"out/{name}" for name in visible] == printed
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert "stopping at once" in stderr
    assert stderr.splitlines()[-1].endswith("not started (interrupted)")
