"""What a user reaches for first: output file names, rembg's commands, --version, completion,
quiet runs, help that shows defaults, watching a folder, and one form for every error."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, ROOT, alpha_of, rmcli
from PIL import Image

GIRL = EXAMPLES / "girl-1.jpg"


def test_version_names_rmcli_onnxruntime_and_python():
    done = rmcli("--version")
    out = done.stdout.decode()
    assert done.returncode == 0
    assert out.startswith("rmcli 0.")
    assert "onnxruntime 1." in out and "CPUExecutionProvider" in out and "Python 3." in out


def test_completion_script_for_bash():
    done = rmcli("--show-completion", "bash")
    assert done.returncode == 0
    assert "complete" in done.stdout.decode() and "rmcli" in done.stdout.decode()


def test_remove_help_shows_defaults_choices_and_variables():
    out = rmcli("remove", "--help-all").stdout.decode()
    flat = " ".join(out.replace("│", " ").split())  # the panels' borders
    assert "-m, --model NAME" in out and "[default: u2netp; env: RMCLI_MODEL]" in flat
    choices = "png, webp, jpg, webm, mov, mp4, gif"
    assert f"[default: png; one of: {choices}; env: RMCLI_OUTPUT_FORMAT]" in flat
    assert "[default: 2; 1-64; env: RMCLI_INFLIGHT]" in flat
    assert "<str>" not in out


def test_errors_have_one_form_and_missing_inputs_are_named():
    done = rmcli("remove")
    assert done.returncode == 2
    assert (
        done.stderr.decode().strip() == "rmcli: error: missing INPUT... (see 'rmcli remove --help')"
    )
    done = rmcli("remove", "x.jpg", "--no-such-flag")
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rmcli: error: no such option: --no-such-flag")


def test_output_file_named_by_o_and_its_suffix_picks_the_format(u2netp_path, tmp_path):
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path / "cut.webp"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(tmp_path / "cut.webp")
    assert Image.open(tmp_path / "cut.webp").format == "WEBP"
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path / "forced.webp"), "--format", "png")
    assert Image.open(tmp_path / "forced.webp").format == "PNG"  # --format wins
    done = rmcli("remove", str(GIRL), str(EXAMPLES / "girl-2.jpg"), "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "names one file, but there are 2 inputs" in done.stderr.decode()
    assert not (tmp_path / "x.png").exists()


def test_quiet_prints_paths_and_errors_only(u2netp_path, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    done = rmcli("remove", str(GIRL), str(tmp_path / "bad.jpg"), "-o", str(tmp_path / "o"), "-q")
    assert done.returncode == 1
    assert (
        done.stderr.decode().strip().splitlines()
        == [f"{tmp_path / 'bad.jpg'}: not an image Pillow can read (UnidentifiedImageError)"]
        or "bad.jpg" in done.stderr.decode()
    )
    assert "written" not in done.stderr.decode()


def test_a_folder_without_r_says_what_it_left_in_sub_folders(u2netp_path, tmp_path):
    (tmp_path / "in" / "deep").mkdir(parents=True)
    shutil.copy(GIRL, tmp_path / "in" / "a.jpg")
    shutil.copy(GIRL, tmp_path / "in" / "deep" / "b.jpg")
    done = rmcli("remove", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert done.returncode == 0
    assert "1 image(s) in sub-folders skipped; add -r" in done.stderr.decode()


def test_rembg_i_and_p_write_rembgs_names_with_rmclis_masks(u2netp_path, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("girl-1.jpg", "animal-2.jpg"):
        shutil.copy(EXAMPLES / name, tmp_path / "in" / name)
    done = rmcli("p", "-m", "u2netp", str(tmp_path / "in"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["animal-2.png", "girl-1.png"]
    done = rmcli("i", "-m", "u2netp", str(GIRL), str(tmp_path / "i.png"))
    assert done.returncode == 0, done.stderr
    reference = rmcli("remove", str(GIRL), "-o", str(tmp_path / "ref"))
    assert reference.returncode == 0
    mine = alpha_of(tmp_path / "ref" / "girl-1.png")
    assert np.array_equal(alpha_of(tmp_path / "i.png"), mine)
    assert np.array_equal(alpha_of(tmp_path / "out" / "girl-1.png"), mine)


def test_rembg_flags_map_or_are_refused_in_one_line(u2netp_path, tmp_path):
    done = rmcli("i", str(GIRL), str(tmp_path / "red.png"), "-bgc", "255", "0", "0", "255")
    assert done.returncode == 0, done.stderr
    corner = Image.open(tmp_path / "red.png").convert("RGBA").getpixel((0, 0))
    assert corner == (255, 0, 0, 255)
    for flags, reason in (
        (["-dc"], "-dc (decontaminate) is rembg-only"),
        (["-x", '{"sam_prompt": []}'], "-x sam_prompt: not supported by rmcli"),
        (["-m", "sam"], "unknown model 'sam'"),
    ):
        done = rmcli("i", str(GIRL), str(tmp_path / "x.png"), *flags)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and reason in err[0], err


def test_p_d_deletes_each_input_once_written(u2netp_path, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(GIRL, tmp_path / "in" / "g.jpg")
    done = rmcli("p", "-d", str(tmp_path / "in"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "g.png").is_file() and not (tmp_path / "in" / "g.jpg").exists()


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


def test_bench_runs_from_a_folder_holding_a_clone_named_rmcli(u2netp_path, tmp_path):
    (tmp_path / "rmcli").mkdir()
    (tmp_path / "rmcli" / "__init__.py").write_text("raise ImportError('the wrong rmcli')\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rmcli"), "bench", "-n", "1", "--backend", "cpu-pinned"],
        capture_output=True, cwd=tmp_path, env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert "cpu-pinned" in done.stdout.decode() and "error" not in done.stdout.decode().lower()


DOWNLOADED_MODEL = """
import os

from rmcli import Model, Weights, hookimpl


@hookimpl
def register_models(register):
    weights = Weights("served.onnx", sha256=os.environ["SERVED_SHA256"],
                      urls=(os.environ["SERVED_URL"],), size=int(os.environ["SERVED_SIZE"]))
    register(Model("served", "served on loopback by the test", weights))
"""


def test_a_weights_download_shows_a_progress_bar_on_a_terminal(tmp_path):
    import hashlib
    import http.server
    import pty
    from functools import partial

    from test_plugins import install

    served = tmp_path / "www"
    served.mkdir()
    payload = os.urandom(3 << 20)
    (served / "served.onnx").write_bytes(payload)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        **install(tmp_path, "rmcli_served", DOWNLOADED_MODEL),
        "SERVED_SHA256": hashlib.sha256(payload).hexdigest(),
        "SERVED_URL": f"http://127.0.0.1:{server.server_address[1]}/served.onnx",
        "SERVED_SIZE": str(len(payload)),
        "RMCLI_MODELS_DIR": str(tmp_path / "models"),
        "COLUMNS": "120",
    }
    parent, child = pty.openpty()  # stderr is a terminal, as for a user
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rmcli", "models", "pull", "served"],
            stdout=subprocess.PIPE, stderr=child, env=env, timeout=120,
        )  # fmt: skip
        os.close(child)
        screen = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        server.shutdown()
        os.close(parent)
    assert done.returncode == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    assert "fetching served.onnx from http://127.0.0.1" in text
    assert re.search(r"\d+\.\d/3\.1 MB", text), text  # the bar: bytes done of the total
    assert (tmp_path / "models" / "served.onnx").read_bytes() == payload


def test_a_bad_backend_from_the_environment_says_so(tmp_path):
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path), env={"RMCLI_BACKEND": "cpu-pined"})
    err = done.stderr.decode().strip()
    assert done.returncode == 2
    assert err.startswith("rmcli: error: unknown backend 'cpu-pined' from env RMCLI_BACKEND")
    assert "did you mean 'cpu-pinned'" in err


def test_config_set_says_what_it_wrote_and_warns_about_too_many_threads():
    from rmcli import usable_cpu_count

    many = usable_cpu_count() + 6
    done = rmcli("config", "set", "intra_threads", str(many))
    assert done.returncode == 0
    assert done.stdout.decode().startswith(f"intra_threads = {many} (file ")
    assert f"intra_threads={many} is more than the {usable_cpu_count()} usable core" in (
        done.stderr.decode()
    )


def test_bench_says_why_the_saved_settings_row_is_absent():
    from rmcli.tools.bench import default_configurations, why_no_saved_layout

    absent = why_no_saved_layout({})
    assert absent and "rmcli tune --save" in absent
    rows = {c.label: c for c in default_configurations(2, {}, saved=absent)}
    assert rows["cpu-pinned, saved settings"].absent == absent  # listed, not measured
    os.environ["RMCLI_INTRA_THREADS"] = "1"  # the autouse fixture restores the environment
    try:
        assert why_no_saved_layout({}) is None
    finally:
        del os.environ["RMCLI_INTRA_THREADS"]


def test_a_normal_install_ships_the_sample_photos_bench_uses(tmp_path):
    target = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    code = "from rmcli.tools.bench import find_images; print(len(find_images([])))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "3"
    assert "site" in subprocess.run(
        [sys.executable, "-c", "import rmcli; print(rmcli.__file__)"], capture_output=True,
        text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)},
    ).stdout  # fmt: skip
