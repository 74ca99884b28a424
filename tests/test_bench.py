"""rmcli bench: every configuration measured in its own process, with plausible figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import EXAMPLES, ROOT, rmcli

from rmcli.cpus import allowed_cpus, usable_cpu_count

IMAGE = str(EXAMPLES / "car-1.jpg")
COLUMNS = {
    "session_seconds",
    "median_seconds",
    "p90_seconds",
    "images_per_second",
    "cpu_cores_used",
    "cpu_percent_of_allowed",
    "peak_rss_mb",
    "threads",
    "providers",
    "intra_threads",
    "inter_threads",
    "speedup_vs_first",
}


def write_tiny_model(path, size: int = 320):
    """A 1x1 convolution (mean of the channels, as weights) then a sigmoid: a u2net-family
    graph with an initializer, so weight variants really differ, that runs in milliseconds."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, size, size])
    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["mean"]),
        helper.make_node("Sigmoid", ["mean"], ["mask"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def test_default_table_has_every_documented_row(u2netp_path):
    config = os.environ["RMCLI_CONFIG"]
    with open(config, "w") as f:
        f.write("intra_threads = 1\n")  # what a user (or an old `rmcli tune --save`) left
    done = rmcli("bench", IMAGE, "-n", "1", "--json")
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    rows = report["configurations"]
    cores = usable_cpu_count()
    labels = [r["label"] for r in rows]
    assert labels == [
        "openmp-env, ORT defaults",
        f"openmp-env, OMP_NUM_THREADS={cores}",
        "cpu-pinned, defaults",
        "cpu-pinned, saved settings",
        "openvino, fp32",
        "openvino, bf16",
    ]
    docs = (ROOT / "docs" / "tuning.md").read_text()
    for label in labels:  # the docs' table of rows names every row
        assert f"| {label.replace(f'={cores}', '=N')} |" in docs, label
    model_mb = u2netp_path.stat().st_size / 2**20
    measured = [row for row in rows if "absent" not in row]
    assert len(measured) >= 4
    for row in measured:
        assert COLUMNS <= row.keys(), row.get("error")
        assert row["images_timed"] == 1
        assert row["session_seconds"] > 0
        assert 0 < row["median_seconds"] <= row["p90_seconds"]
        assert row["images_per_second"] > 0
        assert 0 < row["cpu_percent_of_allowed"] <= 101  # 1% for clock granularity
        assert row["cpu_cores_used"] <= cores * 1.01
        assert row["peak_rss_mb"] > model_mb
        assert row["threads"] >= 1
        assert "CPUExecutionProvider" in row["providers"]
    for row in rows[4:]:  # openvino: measured, or absent with the reason
        assert "absent" not in row or "openvino" in row["absent"] or "bf16" in row["absent"]
    assert (rows[0]["intra_threads"], rows[0]["omp_num_threads"]) == (0, None)  # ORT's own
    assert (rows[1]["intra_threads"], rows[1]["inter_threads"]) == (cores, cores)
    assert rows[2]["intra_threads"] == cores  # built-in default ignores the saved value
    assert rows[3]["intra_threads"] == 1
    assert rows[3]["settings"]["intra_threads"]["source"] == f"file {config}"
    assert rows[0]["speedup_vs_first"] == 1.0
    assert report["recommendation"].startswith("rmcli remove IMAGES -o OUT")


def test_table_fits_100_columns_says_why_a_row_is_absent_and_recommends(tmp_path):
    model = write_tiny_model(tmp_path / "tiny.onnx")
    args = ["--model-path", str(model), "--model-family", "u2net", "-n", "1"]
    done = rmcli("bench", IMAGE, *args)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().rstrip("\n").splitlines()
    assert max(len(line) for line in lines[1:-1]) <= 100, lines  # the table, between model
    # name and recommendation (which name the model file: as long as its path)
    assert lines[0].startswith(f"model custom:{model}")
    saved = next(line for line in lines if line.startswith("cpu-pinned, saved settings"))
    assert "absent: no layout saved for this model (`rmcli tune --save`" in saved
    assert any(line.startswith("openvino, bf16") for line in lines)
    assert lines[-1].startswith("recommendation: ")
    command = lines[-1].removeprefix("recommendation: ").split(" (")[0]
    assert "rmcli remove IMAGES -o OUT" in command
    assert f"--model-path {model} --model-family u2net" in command  # the model measured

    wide = rmcli("bench", IMAGE, *args, "--wide").stdout.decode().splitlines()
    assert {"session s", "p90 ms", "providers"} <= set(wide[1].split("  "))
    assert "p90 ms" not in lines[1]


def test_variants_add_fp16_and_quantized_rows_with_their_mask_error(tmp_path):
    model = write_tiny_model(tmp_path / "tiny.onnx")
    args = ["--model-path", str(model), "--model-family", "u2net", "-n", "1", "--json"]
    done = rmcli("bench", IMAGE, "--backend", "cpu-pinned", "--variants", *args)
    assert done.returncode == 0, done.stderr.decode()
    rows = json.loads(done.stdout)["configurations"]
    assert [r["label"] for r in rows] == [
        "cpu-pinned",
        "cpu-pinned, fp16 weights",
        "cpu-pinned, quantized int8",
    ]
    assert [r.get("variant") for r in rows] == [None, "fp16", "quantized"]
    assert all(r["mask_reference"] == "cpu-pinned" for r in rows)
    assert rows[0]["mask_error_mean"] == 0
    assert all(0 <= r["mask_error_worst"] < 8 for r in rows[1:])  # close, yet other weights
    assert all(
        r["model"].startswith("custom:") and r["model"] != rows[0]["model"] for r in rows[1:]
    )


def test_one_backend_with_set_values_as_markdown(u2netp_path):
    cpu = str(allowed_cpus()[0])
    sets = ["--set", "intra_threads=1", "--set", f"cpu_binding={cpu}"]  # caller pinned, as remove
    done = rmcli("bench", IMAGE, "--backend", "cpu-pinned", *sets, "-n", "1", "--markdown")
    assert done.returncode == 0, done.stderr.decode()
    table, advice = done.stdout.decode().strip().split("\n\n")
    lines = table.splitlines()
    assert len(lines) == 3 and all(line.startswith("|") for line in lines)
    assert lines[2].startswith("| cpu-pinned | 1/1 |")
    command = f"rmcli remove IMAGES -o OUT --intra-threads 1 --cpu-binding {cpu}"
    assert advice == f"recommendation: {command}"  # the only row: it is the advice


def test_bad_backend_or_setting_is_one_line_and_exit_2():
    for args in (["--backend", "nope"], ["--set", "intra_thread=2"], ["--set", "novalue"]):
        done = rmcli("bench", IMAGE, *args)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(err) == 1, (args, err)
        assert err[0].startswith("rmcli: error:")


def test_a_missing_image_is_named():
    done = rmcli("bench", "nowhere.jpg")
    assert done.returncode == 2
    assert "nowhere.jpg" in done.stderr.decode()


def test_recommendation_is_the_fastest_row_within_the_error_budget_beyond_5_percent():
    from rmcli.tools.bench import Configuration, Row, default_configurations, recommendation

    rows = {c.label: c for c in default_configurations(2, {"model": "isnet-general-use"})}

    def row(label: str, seconds: float, error: float = 0.0) -> Row:
        return Row(rows[label], {"median_seconds": seconds, "mask_error_mean": error})

    omp = "openmp-env, OMP_NUM_THREADS=2"
    measured = [row("cpu-pinned, defaults", 1.0), row(omp, 0.8), row("openvino, bf16", 0.5, 3.0)]
    line = recommendation(measured, {"model": "isnet-general-use"}, error_budget=2.0)
    assert line == (  # openvino bf16 is faster but over the mask error budget
        "recommendation: OMP_NUM_THREADS=2 rmcli remove IMAGES -o OUT -b openmp-env "
        "--model isnet-general-use (1.25x rmcli's defaults in this run)"
    )
    close = [row("cpu-pinned, defaults", 1.0), row(omp, 0.97)]
    line = recommendation(close, {}, error_budget=2.0)
    assert line.startswith("recommendation: rmcli remove IMAGES -o OUT (nothing beat it")
    absent = Row(Configuration("openvino, fp32", "openvino", absent="not installed"))
    assert "none" in recommendation([absent], {}, error_budget=2.0)


def test_bench_runs_from_a_folder_holding_a_clone_named_rmcli(u2netp_path, tmp_path):
    (tmp_path / "rmcli").mkdir()
    (tmp_path / "rmcli" / "__init__.py").write_text("raise ImportError('the wrong rmcli')\n")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rmcli"), "bench", "-n", "1", "--backend", "cpu-pinned"],
        capture_output=True, cwd=tmp_path, env=os.environ,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert "cpu-pinned" in done.stdout.decode() and "error" not in done.stdout.decode().lower()


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
