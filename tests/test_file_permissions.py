"""Files and folders rmcli writes: an unwritable folder is one error line, the umask is
respected, a run sweeps its own stale temporary files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from helpers import rmcli
from helpers.torture import drop_root_file_override
from PIL import Image

from rmcli.atomic import atomic_write_bytes, sweep_stale


def _as_user_who_cannot_override(args, env, **kwargs):
    """Run rmcli without root's power to write into read-only folders."""
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        preexec_fn=drop_root_file_override,
        **kwargs,
    )


def test_unwritable_models_and_config_folders_are_one_error_line_and_exit_2(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("in the way")
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    photo = tmp_path / "w.onnx"
    photo.write_bytes(b"not used")
    cases = [
        (["models", "pull", "u2netp"], {"RMCLI_MODELS_DIR": str(blocker)}, "models folder"),
        (["models", "pull", "u2netp"], {"RMCLI_MODELS_DIR": str(readonly / "m")}, "models"),
        (
            ["models", "import", str(photo), "--as", "u2netp"],
            {"RMCLI_MODELS_DIR": str(readonly)},
            "models folder",
        ),
        (["config", "set", "model", "u2netp"], {"RMCLI_CONFIG": f"{blocker}/c.toml"}, "config"),
        (["config", "set", "model", "u2netp"], {"RMCLI_CONFIG": f"{readonly}/c.toml"}, "config"),
    ]
    for args, env, what in cases:
        done = _as_user_who_cannot_override(args, env, timeout=120)
        lines = done.stderr.splitlines()
        assert done.returncode == 2, (args, env, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("rmcli: error: cannot write"), lines
        assert what in lines[0]
    assert list(readonly.iterdir()) == []


def test_new_files_respect_the_umask_and_rewritten_files_keep_their_mode(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        os.umask(0o022)
        atomic_write_bytes(tmp_path / "open.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "open.bin").stat().st_mode) == 0o644

    config = tmp_path / "config.toml"
    config.write_text('model = "u2netp"\n')
    config.chmod(0o600)  # plugin tables may hold tokens
    done = rmcli("config", "set", "backend", "cpu-pinned", env={"RMCLI_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert "cpu-pinned" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_outputs_respect_the_umask(u2netp_path, tmp_path):
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "remove", "one.png", "-o", "out"],
        cwd=tmp_path,
        capture_output=True,
        preexec_fn=lambda: os.umask(0o077),
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "out" / "one.png").stat().st_mode) == 0o600


def test_a_run_removes_its_own_stale_temp_files_by_pattern_and_age_only(tmp_path):
    old = time.time() - 2 * 3600
    stale = [tmp_path / ".a.png.k2j4h_9x.tmp", tmp_path / ".b.jpg.0a1b2c3d.tmp"]
    fresh = tmp_path / ".c.png.ab12cd34.tmp"  # another run may be writing it right now
    others = [
        tmp_path / ".hidden-notes.tmp",  # not our pattern
        tmp_path / "a.png.k2j4h_9x.tmp",  # not hidden
        tmp_path / ".a.png.k2j4h_9x.part",  # another suffix: the models folder's
        tmp_path / "photo.png",
    ]
    for path in [*stale, fresh, *others]:
        path.write_bytes(b"left over")
    for path in [*stale, *others]:
        os.utime(path, (old, old))
    target = tmp_path / "link-dir"
    target.mkdir()
    (tmp_path / ".d.png.deadbeef.tmp").symlink_to(target)  # never followed or removed
    os.utime(tmp_path / ".d.png.deadbeef.tmp", (old, old), follow_symlinks=False)

    atomic_write_bytes(tmp_path / "new.png", b"output")

    assert not any(path.exists() for path in stale)
    assert fresh.exists() and all(path.exists() for path in others)
    assert (tmp_path / ".d.png.deadbeef.tmp").is_symlink() and target.is_dir()
    assert sweep_stale(tmp_path) == 0  # once per folder and run
