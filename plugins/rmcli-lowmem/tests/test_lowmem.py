"""rmcli-lowmem: installed through its entry point, options on the real session, a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("rmcli_lowmem", reason="install it first: pip install -e plugins/rmcli-lowmem")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]  # the rmcli checkout, for its example photo and rembg reference
PHOTO = REPO / "examples" / "car-1.jpg"
REFERENCE = REPO / "tests" / "data" / "rembg-u2netp" / "car-1.alpha.png"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """No user config; the weights cache of the checkout's test runs (fetched once)."""
    for name in list(os.environ):
        if name.startswith("RMCLI_") or name == "INTRA_OP_NUM_THREADS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RMCLI_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("RMCLI_MODELS_DIR", str(REPO / ".pytest_cache" / "rmcli-models"))
    return tmp_path


def rmcli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rmcli", *args], capture_output=True, text=True, env=os.environ
    )


def test_rmcli_backends_lists_lowmem_as_installed(env):
    done = rmcli("backends", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["lowmem"]["available"] is True
    assert rows["lowmem"]["origin"] == "installed: rmcli-lowmem"
    assert rows["lowmem"]["providers"] == ["CPUExecutionProvider"]


def test_session_has_no_arena_no_pattern_and_quota_threads(env):
    from rmcli import Remover
    from rmcli.cpus import usable_cpu_count

    options = Remover(backend="lowmem").session.session.get_session_options()
    assert options.enable_cpu_mem_arena is False
    assert options.enable_mem_pattern is False
    assert options.intra_op_num_threads == usable_cpu_count()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_threads_from_the_plugin_table_and_bad_values(env):
    (env / "config.toml").write_text("[plugins.lowmem]\nthreads = 1\n")
    from rmcli import Remover

    remover = Remover(backend="lowmem")
    assert remover.layout.intra_threads == 1
    (env / "config.toml").write_text("[plugins.lowmem]\nthreads = 'many'\n")
    done = rmcli("remove", str(PHOTO), "-o", str(env / "out"), "--backend", "lowmem")
    assert done.returncode == 2
    assert "[plugins.lowmem] threads = 'many'" in done.stderr


def test_remove_with_lowmem_matches_rembg(env):
    done = rmcli("remove", str(PHOTO), "-o", str(env / "out"), "--backend", "lowmem")
    assert done.returncode == 0, done.stderr
    alpha = np.asarray(Image.open(env / "out" / "car-1.png").getchannel("A"), float)
    reference = np.asarray(Image.open(REFERENCE), float)
    assert np.abs(alpha - reference).mean() <= 0.5
