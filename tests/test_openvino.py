"""The openvino backend and the precision setting.

Everywhere: the refusals, the fallback to the CPU provider with its warning (or exit 2 with
strict_device), the detection of a mixed or missing ONNX Runtime install. Where the OpenVINO
build of ONNX Runtime is installed (``pip install -e '.[openvino,test]'``, or the fresh
environment of test_openvino_install.py): real u2netp runs on OpenVINOExecutionProvider.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from helpers import CAR, DATA, EXAMPLES, ROOT, alpha_of, rmcli

from rmcli.builtins.openvino import OpenVino, native_bf16_problem
from rmcli.extras import pip_install

OPENVINO_HERE = OpenVino().availability()[0]
needs_openvino = pytest.mark.skipif(
    not OPENVINO_HERE, reason="onnxruntime-openvino is not installed in this environment"
)
without_openvino = pytest.mark.skipif(OPENVINO_HERE, reason="onnxruntime-openvino is installed")


def rembg_alpha(photo: Path) -> np.ndarray:
    return alpha_of(DATA / "rembg-u2netp" / f"{photo.stem}.alpha.png")


# --- precision: every backend but openvino refuses bf16, naming the one that can ---------


@pytest.mark.parametrize(
    ("intra", "streams", "usable", "threads"),
    [(2, 1, 2, "2"), (1, 2, 2, "2"), (2, 2, 4, "4"), (2, 4, 4, "4"), (4, 1, 2, "4")],
)
def test_openvino_threads_are_per_stream_within_the_cores(intra, streams, usable, threads):
    """num_of_threads is the compiled model's total: intra_threads for each stream, at most
    the usable cores (an explicit intra_threads alone is kept as given)."""
    from dataclasses import replace

    from rmcli.config.settings import resolve
    from rmcli.contracts.threads import ThreadLayout

    settings = resolve({"openvino_streams": streams}, env={}, path=Path("/nonexistent.toml"))
    layout = replace(ThreadLayout(intra_threads=intra), usable_cpus=usable)
    options = OpenVino().provider_options(settings, layout)
    assert (options["num_of_threads"], options["num_streams"]) == (threads, str(streams))


def test_bf16_on_cpu_pinned_is_one_line_naming_openvino(tmp_path):
    for args, env, source in (
        (["--precision", "bf16"], {}, "flag --precision"),
        ([], {"RMCLI_PRECISION": "bf16"}, "env RMCLI_PRECISION"),
    ):
        done = rmcli("remove", str(CAR), "-o", str(tmp_path), *args, env=env)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(err) == 1, err
        assert err[0] == (
            "rmcli: error: backend 'cpu-pinned' runs fp32 only, not precision bf16 "
            f"({source}): use --backend openvino"
        )
    assert not list(tmp_path.iterdir())


def test_precision_from_the_config_file_and_a_bad_value(tmp_path):
    assert rmcli("config", "set", "precision", "bf16").returncode == 0
    listed = rmcli("config", "list", "--sources").stdout.decode()
    assert f'precision = "bf16" (file {os.environ["RMCLI_CONFIG"]})' in listed
    # a backend given on the command line brings its own precision: the file's is not in effect
    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--backend", "openmp-env", "-v")
    assert done.returncode == 0, done.stderr.decode()
    assert 'not in effect: "bf16" from file' in done.stderr.decode()
    done = rmcli(
        "remove", str(CAR), "-o", str(tmp_path), "--backend", "openmp-env", "--precision", "bf16"
    )  # fmt: skip
    assert done.returncode == 2
    assert "backend 'openmp-env' runs fp32 only" in done.stderr.decode()
    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--precision", "fp16")
    assert done.returncode == 2
    assert "--precision='fp16' is not one of fp32, bf16" in done.stderr.decode()


# --- without onnxruntime-openvino: listed as unavailable, runs on the CPU with a warning ---


@without_openvino
def test_backends_lists_openvino_unavailable_with_the_install_command():
    done = rmcli("backends", "--json")
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    row = rows["openvino"]
    assert row["available"] is False
    assert f"onnxruntime-openvino is not installed ({pip_install('openvino')})" in row["reason"]
    assert row["providers"] == ["OpenVINOExecutionProvider", "CPUExecutionProvider"]


@without_openvino
def test_openvino_missing_falls_back_to_the_cpu_with_one_warning(u2netp_path, tmp_path):
    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--backend", "openvino", "-v")
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    warnings = [line for line in err.splitlines() if line.startswith("rmcli: warning:")]
    assert warnings == [
        "rmcli: warning: openvino: OpenVINO is not used, running on the CPU provider at fp32: "
        f"onnxruntime-openvino is not installed ({pip_install('openvino')})"
    ]
    assert "active providers: CPUExecutionProvider" in err
    ours = alpha_of(tmp_path / "car-1.png")
    assert np.abs(ours - rembg_alpha(CAR)).mean() <= 0.5


@without_openvino
def test_openvino_missing_with_strict_device_is_exit_2(u2netp_path, tmp_path):
    done = rmcli(
        "remove", str(CAR), "-o", str(tmp_path), "--backend", "openvino", "--strict-device"
    )
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert "OpenVINO is not used: onnxruntime-openvino is not installed" in err[0]
    assert "strict_device is set" in err[0]


# --- packaging: two ONNX Runtime builds in one environment, or none ----------------------


def _installed_ort() -> tuple[str, str]:
    for name in ("onnxruntime", "onnxruntime-openvino", "onnxruntime-gpu"):
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    raise AssertionError("no onnxruntime build in the test environment")


def test_a_second_onnxruntime_build_is_named_with_the_fix(u2netp_path, tmp_path):
    """pip's record of a second build (a dist-info folder) is all it takes to be detected."""
    installed, version = _installed_ort()
    other = "onnxruntime-openvino" if installed != "onnxruntime-openvino" else "onnxruntime"
    site = tmp_path / "site"
    info = site / f"{other.replace('-', '_')}-1.24.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {other}\nVersion: 1.24.1\n")
    env = {"PYTHONPATH": str(site)}
    done = rmcli("remove", str(CAR), "-o", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr.decode()
    warnings = done.stderr.decode().strip().splitlines()
    names = sorted([installed, other])
    assert len(warnings) == 1
    assert warnings[0].startswith("rmcli: warning: several ONNX Runtime builds are installed (")
    assert f"{installed} {version}" in warnings[0] and f"{other} 1.24.1" in warnings[0]
    fix = f"Keep one: pip uninstall -y {' '.join(names)} && {pip_install('openvino')}"
    assert warnings[0].endswith(fix)
    listed = rmcli("backends", "--json", env=env)
    assert listed.stderr.decode().strip() == warnings[0]
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["openvino"]["available"] is False
    assert rows["openvino"]["reason"] == warnings[0].removeprefix("rmcli: warning: ")


def test_no_onnxruntime_at_all_is_one_line_with_the_install_command(tmp_path):
    """A Python that sees every installed package but the onnxruntime builds (and rmcli's
    editable installs, replaced by the source folder on PYTHONPATH)."""
    site_packages = Path(metadata.distribution("numpy").locate_file(""))
    view = tmp_path / "site"
    view.mkdir()
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if not name.startswith(("onnxruntime", "__editable__", "rmcli", "_distutils")):
            (view / entry.name).symlink_to(entry)
    done = subprocess.run(
        [sys.executable, "-S", "-m", "rmcli", "remove", str(CAR), "-o", str(tmp_path)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{view}"},
    )
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert err[0] == (
        f"rmcli: error: ONNX Runtime is not installed: {pip_install('cpu')} "
        "(or the gpu extra for CUDA, openvino for OpenVINO)"
    )


# --- with onnxruntime-openvino: the real thing ----------------------------------------------


@needs_openvino
def test_backends_lists_openvino_available():
    rows = {r["name"]: r for r in json.loads(rmcli("backends", "--json").stdout)}
    assert rows["openvino"]["available"] is True
    assert rows["openvino"]["reason"].startswith("onnxruntime-openvino ")


@needs_openvino
def test_fp32_runs_on_openvino_with_rembg_masks_and_caches_the_compiled_model(
    u2netp_path, tmp_path
):
    cache = tmp_path / "compiled"
    env = {"RMCLI_OPENVINO_CACHE_DIR": str(cache)}
    for _ in range(2):  # the second session loads the compiled model from the cache
        done = rmcli(
            "remove", str(CAR), "-o", str(tmp_path), "--backend", "openvino", "-v", env=env
        )
        assert done.returncode == 0, done.stderr.decode()
        err = done.stderr.decode()
        assert "active providers: OpenVINOExecutionProvider, CPUExecutionProvider" in err
        assert "warning" not in err
        assert "inference_precision_hint = f32" in err
    assert any(cache.iterdir())
    ours = alpha_of(tmp_path / "car-1.png")
    assert np.abs(ours - rembg_alpha(CAR)).mean() <= 0.5


@needs_openvino
def test_bf16_runs_only_where_native_and_says_so(u2netp_path, tmp_path):
    args = ("remove", str(CAR), "-o", str(tmp_path), "--backend", "openvino", "--precision")
    done = rmcli(*args, "bf16", "-v")
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    problem = native_bf16_problem()
    bf16 = alpha_of(tmp_path / "car-1.png")
    error = np.abs(bf16 - rembg_alpha(CAR)).mean()
    if problem is None:
        assert "warning" not in err and "inference_precision_hint = bf16" in err
        assert 0 < error <= 8  # really bf16 (not the exact fp32 masks), and close
    else:
        assert f"precision bf16 is not used, running at fp32: {problem}" in err
        assert error <= 0.5
        strict = rmcli(*args, "bf16", "--strict-device")
        assert strict.returncode == 2 and "no native bf16" in strict.stderr.decode()


@needs_openvino
def test_bench_measures_openvino_with_its_mask_error(u2netp_path):
    done = rmcli("bench", str(CAR), str(EXAMPLES / "animal-3.jpg"), "-n", "1", "--json")
    assert done.returncode == 0, done.stderr.decode()
    rows = {r["label"]: r for r in json.loads(done.stdout)["configurations"]}
    fp32 = rows["openvino, fp32"]
    assert fp32["providers"][0] == "OpenVINOExecutionProvider"
    assert fp32["mask_reference"] == "cpu-pinned, defaults"
    assert fp32["mask_error_worst"] <= 0.5
    assert rows["cpu-pinned, defaults"]["mask_error_worst"] == 0
    if native_bf16_problem() is None:
        assert rows["openvino, bf16"]["precision"] == "bf16"
        assert 0 < rows["openvino, bf16"]["mask_error_mean"] <= 8
    else:
        assert rows["openvino, bf16"]["absent"] == native_bf16_problem()
