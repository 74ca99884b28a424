"""rmcli bench: every configuration measured in its own process, with plausible figures."""

from __future__ import annotations

import json
import os

from conftest import EXAMPLES, rmcli

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


def test_default_table_reproduces_the_four_configurations(u2netp_path):
    config = os.environ["RMCLI_CONFIG"]
    with open(config, "w") as f:
        f.write("intra_threads = 1\n")  # what `rmcli tune --save` might have left
    done = rmcli("bench", IMAGE, "-n", "1", "--json")
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    rows = report["configurations"]
    cores = usable_cpu_count()
    assert [r["label"] for r in rows] == [
        "openmp-env, ORT defaults",
        f"openmp-env, OMP_NUM_THREADS={cores}",
        "cpu-pinned, defaults",
        "cpu-pinned, saved settings",
    ]
    model_mb = u2netp_path.stat().st_size / 2**20
    for row in rows:
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
    assert (rows[0]["intra_threads"], rows[0]["omp_num_threads"]) == (0, None)  # ORT's own
    assert (rows[1]["intra_threads"], rows[1]["inter_threads"]) == (cores, cores)
    assert rows[2]["intra_threads"] == cores  # built-in default ignores the saved value
    assert rows[3]["intra_threads"] == 1
    assert rows[3]["settings"]["intra_threads"]["source"] == f"file {config}"
    assert rows[0]["speedup_vs_first"] == 1.0


def test_one_backend_with_set_values_as_markdown(u2netp_path):
    cpu = str(allowed_cpus()[0])
    sets = ["--set", "intra_threads=1", "--set", f"cpu_binding={cpu}"]  # caller pinned, as remove
    done = rmcli("bench", IMAGE, "--backend", "cpu-pinned", *sets, "-n", "1", "--markdown")
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("|") for line in lines)
    assert lines[2].startswith("| cpu-pinned | 1/1 |")


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
