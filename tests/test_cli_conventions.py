"""What every command does the same way: --version, shell completion, help that shows
defaults, one form for every error, quiet runs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from helpers import GIRL, rmcli


def test_version_names_rmcli_onnxruntime_and_python():
    done = rmcli("--version")
    out = done.stdout.decode()
    assert done.returncode == 0
    assert out.startswith("rmcli 0.")
    assert "onnxruntime 1." in out and "CPUExecutionProvider" in out and "Python 3." in out


def test_completion_script_for_bash():
    """Typed in bash, --show-completion prints bash's script (the shell is detected from the
    parent process, so bash must stay the parent: the ``; exit`` keeps it from exec'ing)."""
    command = f"{shlex.quote(sys.executable)} -m rmcli --show-completion; exit $?"
    done = subprocess.run(["bash", "-c", command], capture_output=True)
    assert done.returncode == 0, done.stderr
    script = done.stdout.decode()
    assert "_rmcli_completion()" in script and "complete " in script and "_RMCLI_COMPLETE" in script


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


def test_quiet_prints_paths_and_errors_only(u2netp_path, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    done = rmcli("remove", str(GIRL), str(tmp_path / "bad.jpg"), "-o", str(tmp_path / "o"), "-q")
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        f"{tmp_path / 'bad.jpg'}: not an image (or a format Pillow cannot read)"
    ]
    assert done.stdout.decode().split() == [str(tmp_path / "o" / "girl-1.png")]


def test_a_bad_backend_from_the_environment_says_so(tmp_path):
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path), env={"RMCLI_BACKEND": "cpu-pined"})
    err = done.stderr.decode().strip()
    assert done.returncode == 2
    assert err.startswith("rmcli: error: unknown backend 'cpu-pined' from env RMCLI_BACKEND")
    assert "did you mean 'cpu-pinned'" in err
