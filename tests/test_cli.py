"""The `rmcli remove` command as a user runs it: outputs, naming, and clear failures."""

from __future__ import annotations

import io
import shutil

import numpy as np
from helpers import DATA, EXAMPLES, alpha_of, rmcli
from PIL import Image


def test_output_goes_beside_the_input_without_o(u2netp_path, tmp_path):
    photo = shutil.copy(EXAMPLES / "car-1.jpg", tmp_path / "my car.jpg")
    done = rmcli("remove", str(photo))
    assert done.returncode == 0, done.stderr
    written = tmp_path / "my car.out.png"
    assert done.stdout.decode().strip() == str(written)
    out = Image.open(written)
    assert out.mode == "RGBA" and out.size == Image.open(photo).size
    reference = alpha_of(DATA / "rembg-u2netp" / "car-1.alpha.png")
    assert np.abs(alpha_of(out) - reference).mean() <= 0.5


def test_folder_recursion_keeps_sub_folders(u2netp_path, tmp_path):
    source = tmp_path / "in"
    (source / "a" / "b").mkdir(parents=True)
    shutil.copy(EXAMPLES / "car-1.jpg", source / "top.jpg")
    shutil.copy(EXAMPLES / "girl-1.jpg", source / "a" / "b" / "deep.jpg")
    (source / "notes.txt").write_text("not an image input")
    done = rmcli("remove", str(source), "-r", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "top.png").is_file()
    assert (tmp_path / "out" / "a" / "b" / "deep.png").is_file()
    assert rmcli("remove", str(source), "-o", str(tmp_path / "flat")).returncode == 0
    assert sorted(p.name for p in (tmp_path / "flat").rglob("*.png")) == ["top.png"]


def test_stdin_to_stdout(u2netp_path):
    done = rmcli("remove", "-", stdin=(EXAMPLES / "car-1.jpg").read_bytes())
    assert done.returncode == 0, done.stderr
    out = Image.open(io.BytesIO(done.stdout))
    assert out.format == "PNG" and out.mode == "RGBA"
    reference = alpha_of(DATA / "rembg-u2netp" / "car-1.alpha.png")
    assert np.abs(alpha_of(out) - reference).mean() <= 0.5


def test_missing_file_is_one_line_and_the_batch_goes_on(u2netp_path, tmp_path):
    missing = tmp_path / "nope.jpg"
    done = rmcli("remove", str(missing), str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path))
    assert done.returncode == 1
    errors = done.stderr.decode().splitlines()
    assert f"{missing}: no such file" in errors
    assert errors[-1] == "1 written, 1 failed"
    assert "Traceback" not in done.stderr.decode()
    assert (tmp_path / "car-1.png").is_file()


def test_unknown_model_and_backend_are_usage_errors(tmp_path):
    photo = str(EXAMPLES / "car-1.jpg")
    for flag, name, close in [
        ("--model", "u2netpp", "u2netp"),
        ("--backend", "cpu-pined", "cpu-pinned"),
    ]:
        done = rmcli("remove", photo, flag, name, "-o", str(tmp_path))
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2
        assert len(lines) == 1, lines
        assert name in lines[0] and f"did you mean {close!r}" in lines[0]
    assert not list(tmp_path.iterdir())


def test_debug_switch_shows_the_traceback(tmp_path):
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "--model", "nope", env={"RMCLI_DEBUG": "1"})
    assert done.returncode == 2
    assert "Traceback" in done.stderr.decode()


def test_bad_setting_value_names_its_origin(tmp_path):
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), env={"RMCLI_INTRA_THREADS": "four"})
    assert done.returncode == 2
    assert "RMCLI_INTRA_THREADS" in done.stderr.decode() and "four" in done.stderr.decode()
