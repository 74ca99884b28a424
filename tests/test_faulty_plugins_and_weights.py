"""Broken weights and plugins: detected, named in one line, and the rest keeps working."""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import EXAMPLES, alpha_of, rmcli
from helpers.httpserve import serving
from test_plugins import PLUGIN, install

from rmcli.engine.registry import get_model
from rmcli.engine.weights import WeightsStore

RAISING = """
from rmcli import hookimpl


@hookimpl
def register_backends(register):
    raise RuntimeError("backend table is corrupt")


@hookimpl
def adjust_session(plan):
    raise ValueError("cannot adjust")


@hookimpl
def session_created(session, plan):
    raise KeyError("no such key")
"""

GARBAGE = """
import hashlib
import os
from pathlib import Path

from rmcli import hookimpl
from rmcli.contracts.model import Model, Weights

HERE = Path(os.environ["GARBAGE_DIR"])


@hookimpl
def register_models(register):
    garbage = HERE / "garbage.bin"
    md5 = hashlib.md5(garbage.read_bytes()).hexdigest()
    url = os.environ["GARBAGE_URL"]
    register(Model("garbage", "checksum-valid, not ONNX", Weights("garbage.onnx", md5=md5,
                                                                  urls=(url,))))
    register(Model("mismatch", "wrong bytes at the only source", Weights("mismatch.onnx",
                   md5="0" * 32, urls=(url,))))
"""


@pytest.mark.parametrize("damage", ["one byte flipped, size and mtime kept", "truncated"])
def test_a_corrupted_cached_model_is_detected_and_fetched_again(u2netp_path, tmp_path, damage):
    models, rembg_home = tmp_path / "models", tmp_path / "u2net"
    rembg_home.mkdir()
    shutil.copyfile(u2netp_path, rembg_home / "u2netp.onnx")  # a source that needs no network
    env = {"RMCLI_MODELS_DIR": str(models), "U2NET_HOME": str(rembg_home)}
    photo = str(EXAMPLES / "car-1.jpg")
    assert rmcli("remove", photo, "-o", str(tmp_path / "a"), env=env).returncode == 0
    cached = models / "u2netp.onnx"
    assert WeightsStore(models).is_valid(get_model("u2netp").weights)  # now remembered as good
    assert (models / "u2netp.onnx.verified").is_file()
    good = cached.read_bytes()
    before = cached.stat()
    with open(cached, "r+b") as handle:
        if damage == "truncated":
            handle.truncate(len(good) // 2)
        else:
            handle.seek(len(good) // 2)
            handle.write(bytes([good[len(good) // 2] ^ 0xFF]))
    if damage != "truncated":
        os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert cached.stat().st_size == before.st_size
        assert cached.stat().st_mtime_ns == before.st_mtime_ns
    if damage == "truncated":  # offline with no copy to restore from: one clear error line
        (rembg_home / "u2netp.onnx").rename(tmp_path / "kept.onnx")
        offline = rmcli("remove", photo, "--offline", "-o", str(tmp_path / "c"), env=env)
        assert offline.returncode == 2
        lines = offline.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(
            "rmcli: error: weights u2netp.onnx (md5:8e83ca70e441ab06c318d82300c84806) are "
            f"damaged in the cache and offline mode forbids downloading. Place the file at {cached}"
        )
        assert not (tmp_path / "c").exists()
        (tmp_path / "kept.onnx").rename(rembg_home / "u2netp.onnx")
    done = rmcli("remove", photo, "-o", str(tmp_path / "b"), env=env)
    assert done.returncode == 0, done.stderr
    assert f"cached {cached} does not match its checksum" in done.stderr.decode()
    assert cached.read_bytes() == good
    assert (alpha_of(tmp_path / "a" / "car-1.png") == alpha_of(tmp_path / "b" / "car-1.png")).all()


def test_weights_onnx_runtime_cannot_load_are_named_in_one_error_line(tmp_path):
    (tmp_path / "garbage.bin").write_bytes(b"these bytes pass the checksum but are no ONNX graph")
    with serving(tmp_path) as base:
        env = install(tmp_path, "rmcli_garbage", GARBAGE)
        env.update(GARBAGE_DIR=str(tmp_path), RMCLI_MODELS_DIR=str(tmp_path / "models"))
        env["GARBAGE_URL"] = f"{base}/garbage.bin"
        photo = str(EXAMPLES / "car-1.jpg")
        done = rmcli("remove", photo, "--model", "garbage", "-o", str(tmp_path / "out"), env=env)
        assert done.returncode == 2
        errors = [ln for ln in done.stderr.decode().splitlines() if ln.startswith("rmcli: error: ")]
        path = tmp_path / "models" / "garbage.onnx"
        assert len(errors) == 1, done.stderr
        assert errors[0].startswith(f"rmcli: error: {path}: ONNX Runtime could not load it: ")
        assert "INVALID_PROTOBUF" in errors[0]
        assert not (tmp_path / "out").exists()

        done = rmcli("remove", photo, "--model", "mismatch", "-o", str(tmp_path / "out"), env=env)
        assert done.returncode == 2
        message = done.stderr.decode().splitlines()[-1]
        assert message.startswith("rmcli: error: cannot get weights mismatch.onnx (md5:000")
        assert "garbage.bin: checksum md5:" in message
        assert not (tmp_path / "models" / "mismatch.onnx").exists()
        assert not [p for p in (tmp_path / "models").iterdir() if p.suffix == ".part"]


def test_a_plugin_raising_in_hooks_is_named_once_per_hook_and_others_keep_working(
    u2netp_path, tmp_path
):
    install(tmp_path, "rmcli_raising", RAISING)
    env = install(tmp_path, "rmcli_onethread", PLUGIN)
    out = tmp_path / "out"
    done = rmcli(
        "remove", str(EXAMPLES / "car-1.jpg"), "--backend", "one-thread", "-o", str(out), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "adjusted one-thread for u2netp" in done.stdout.decode()  # the good plugin still ran
    assert (out / "car-1.png").is_file()
    named = [ln for ln in done.stderr.decode().splitlines() if "rmcli_raising" in ln]
    assert sorted(named) == [
        "rmcli: warning: plugin 'rmcli_raising' failed in adjust_session: ValueError: "
        "cannot adjust",
        "rmcli: warning: plugin 'rmcli_raising' failed in register_backends: RuntimeError: "
        "backend table is corrupt",
        "rmcli: warning: plugin 'rmcli_raising' failed in session_created: KeyError: 'no such key'",
    ]
