"""CI only: the documented OpenVINO install works in a fresh environment, with one build.

Creates a virtual environment, runs the README's command ``pip install -e '.[openvino]'``
(plus pytest), and checks that only onnxruntime-openvino is installed, that ``rmcli backends``
shows openvino available, and that the openvino tests and the rembg parity tests pass there
on ``--backend openvino``. It downloads about 80 MB unless pip's cache has them and takes a
few minutes, so it runs only with ``RMCLI_TEST_INSTALL=1`` (``.ci/run`` sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, WEIGHTS_CACHE

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(
        not os.environ.get("RMCLI_TEST_INSTALL"), reason="installs packages: RMCLI_TEST_INSTALL=1"
    ),
]
INSTALL_TIMEOUT = 900  # seconds, a slow index included
TEST_TIMEOUT = 900


def run(*args: str, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_openvino_extra_installs_one_build_and_runs_u2netp_on_openvino(u2netp_path, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), timeout=120)
    python = str(venv / "bin" / "python")
    run(
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "-e",
        f"{ROOT}[openvino]",
        "pytest",
        timeout=INSTALL_TIMEOUT,
    )

    listed = json.loads(run(python, "-m", "pip", "list", "--format", "json", timeout=120).stdout)
    builds = sorted(p["name"] for p in listed if p["name"].lower().startswith("onnxruntime"))
    assert builds == ["onnxruntime-openvino"]

    rows = {r["name"]: r for r in json.loads(run(python, "-m", "rmcli", "backends", "--json",
                                                 timeout=120).stdout)}  # fmt: skip
    assert rows["openvino"]["available"] is True, rows["openvino"]["reason"]

    # the real model on OpenVINO, as a user runs it
    env = {**os.environ, "RMCLI_MODELS_DIR": str(WEIGHTS_CACHE)}
    car = str(ROOT / "examples" / "car-1.jpg")
    done = run(python, "-m", "rmcli", "remove", car, "-o", str(tmp_path), "--backend", "openvino",
               "-v", timeout=300, env=env)  # fmt: skip
    assert "active providers: OpenVINOExecutionProvider, CPUExecutionProvider" in done.stderr
    assert "warning" not in done.stderr

    # the openvino tests, then rembg parity of the 13 photos on --backend openvino
    for tests, extra in (
        (["tests/test_openvino.py"], {}),
        (["tests/test_parity.py"], {"RMCLI_TEST_BACKEND": "openvino"}),
    ):
        done = subprocess.run(
            [python, "-m", "pytest", "-q", "-m", "", "-p", "no:cacheprovider", *tests],
            capture_output=True,
            text=True,
            timeout=TEST_TIMEOUT,
            cwd=ROOT,
            env={**env, **extra},
        )
        assert done.returncode == 0, done.stdout[-4000:]
        assert " passed" in done.stdout and " failed" not in done.stdout
