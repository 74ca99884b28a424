"""Execution backends: their effect on real ONNX Runtime sessions, threads and masks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import DATA, EXAMPLES, alpha_of, rmcli
from PIL import Image

from rmcli import Remover, hookimpl
from rmcli.cpus import (
    AFFINITY_ENTRY,
    affinity_entry,
    allowed_cpus,
    cgroup_cpu_limit,
    check_affinity_entry,
    split_binding,
    usable_cpu_count,
)
from rmcli.engine.registry import get_plugin_manager
from rmcli.engine.session import clear_sessions
from rmcli.errors import BackendError, ConfigError
from rmcli.extras import pip_install

TWO_CPUS = pytest.mark.skipif(len(allowed_cpus()) < 2, reason="needs two allowed CPUs")


@pytest.fixture(autouse=True)
def fresh_sessions():
    clear_sessions()
    yield
    clear_sessions()


def options_of(remover: Remover):
    """The options the built session really has (not the ones we meant to give it)."""
    return remover.session.session.get_session_options()


def entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:
        return None


def run_python(code: str, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh interpreter (threads and global pools are process-wide)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


THREADS_AFTER = """
import json, os
def tasks():
    return len(os.listdir("/proc/self/task"))
import onnxruntime
from rmcli import Remover
before = tasks()
removers = [Remover(**kw) for kw in {kwargs}]
for r in removers:
    r.session
print(json.dumps({{"added": tasks() - before}}))
"""


# --- cpu-pinned -------------------------------------------------------------------------


def test_cpu_pinned_sizes_threads_to_usable_cpus_and_stops_spinning(u2netp_path):
    options = options_of(Remover(backend="cpu-pinned"))
    assert options.intra_op_num_threads == usable_cpu_count()
    assert options.inter_op_num_threads == 1
    assert entry(options, "session.intra_op.allow_spinning") == "1"
    assert entry(options, "session.force_spinning_stop") == "1"
    assert entry(options, AFFINITY_ENTRY) is None  # no binding, no pinning
    assert options.enable_mem_pattern is False


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "50000 100000"}, 0.5),
        ({"cpu.max": "max 100000"}, None),
        ({"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ],
)
def test_cgroup_quota_is_read_from_v1_and_v2_files(tmp_path, files, limit):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    assert cgroup_cpu_limit(tmp_path) == limit


def test_cpu_pinned_obeys_a_cgroup_quota_smaller_than_the_cpu_set(
    u2netp_path, tmp_path, monkeypatch
):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # --cpus=1 in a container
    monkeypatch.setattr("rmcli.cpus.CGROUP_ROOT", tmp_path)
    remover = Remover(backend="cpu-pinned")
    assert options_of(remover).intra_op_num_threads == 1
    assert remover.layout.cgroup_cpu_limit == 1.0


def test_cpu_pinned_spinning_off(u2netp_path):
    options = options_of(Remover(allow_spinning=False, intra_threads=2))
    assert entry(options, "session.intra_op.allow_spinning") == "0"
    assert entry(options, "session.inter_op.allow_spinning") == "0"
    assert entry(options, "session.force_spinning_stop") is None


@TWO_CPUS
@pytest.mark.parametrize(
    ("binding", "threads", "used", "expected"),
    [
        ("0,1", 2, 2, "2"),
        ("1,0", 2, 2, "1"),
        ("0-1", None, 2, "2"),
        ("1", None, 1, None),
        ("0,1", 1, 1, None),
    ],
)
def test_cpu_binding_becomes_the_affinity_entry(u2netp_path, binding, threads, used, expected):
    options = options_of(Remover(cpu_binding=binding, intra_threads=threads))
    assert options.intra_op_num_threads == used
    assert entry(options, AFFINITY_ENTRY) == expected


def test_affinity_string_shares_bound_cpus_among_threads():
    # what 8-CPU bindings turn into (this machine has 2, so only the strings are checked)
    assert split_binding([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert split_binding([4, 5, 6, 7, 8], 3) == [[4, 5], [6, 7], [8]]
    assert affinity_entry(split_binding([0, 1, 2, 3], 4)[1:]) == "2;3;4"
    assert affinity_entry(split_binding([0, 1, 2, 3, 4, 5, 6, 7], 4)[1:]) == "3,4;5,6;7,8"


@pytest.mark.parametrize(
    ("text", "threads", "problem"),
    [
        ("2", 3, "has 1 group(s) but intra_op_num_threads=3 needs 2"),
        ("2;3", 2, "has 2 group(s)"),
        ("0", 2, "1-based"),
        ("x", 2, "not a CPU number"),
        ("2", 1, "needs intra_op_num_threads >= 2"),
        ("99", 2, "outside the ones this process may use"),
    ],
)
def test_bad_affinity_strings_are_refused_with_the_reason(text, threads, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        check_affinity_entry(text, threads, [0, 1])
    assert check_affinity_entry("2,3;4-5", 3, [0, 1, 2, 3, 4]) == [[1, 2], [3, 4]]


class _BadAffinityPlugin:
    @hookimpl
    def adjust_session(self, plan):
        plan.options.add_session_config_entry(AFFINITY_ENTRY, "1;2")


def test_a_plugin_setting_a_bad_affinity_entry_gets_a_clear_error(u2netp_path):
    pm = get_plugin_manager()
    plugin = _BadAffinityPlugin()
    pm.register(plugin, name="bad-affinity")
    try:
        with pytest.raises(BackendError, match=r"has 2 group.* needs 1"):
            Remover(intra_threads=2, cpu_binding="").session  # noqa: B018
    finally:
        pm.unregister(plugin)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cpu-binding", "0,0"], "names a CPU twice"),
        (["--cpu-binding", "1-0"], "goes backwards"),
        (["--cpu-binding", "4096"], "outside the ones this process may use"),
        (["--cpu-binding", "0", "--intra-threads", "2"], "names 1 CPUs but intra_threads is 2"),
    ],
)
def test_bad_cpu_binding_is_one_line_and_exit_2(tmp_path, flags, message):
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path), *flags)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_inter_threads_warn_in_sequential_mode_and_apply_in_parallel(u2netp_path, caplog):
    options = options_of(Remover(inter_threads=2, intra_threads=1))
    assert options.inter_op_num_threads == 1
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and "inter_threads=2" in warning[0] and "ignored" in warning[0]
    caplog.clear()
    options = options_of(Remover(inter_threads=2, intra_threads=1, execution_mode="parallel"))
    assert options.inter_op_num_threads == 2
    assert "ignored" not in caplog.text


@pytest.mark.parametrize(("threads", "added"), [(1, 0), (2, 1), (3, 2)])
def test_process_really_has_intra_threads_minus_one_workers(u2netp_path, threads, added):
    code = THREADS_AFTER.format(kwargs=[{"intra_threads": threads}])
    assert run_python(code)["added"] == added


@TWO_CPUS
def test_calling_thread_is_pinned_after_creation_and_workers_keep_their_cpus(u2netp_path):
    code = """
    import json, os
    import onnxruntime  # its own threads exist before we count
    from rmcli import Remover
    r = Remover(cpu_binding="0,1")
    before = {int(t) for t in os.listdir("/proc/self/task")}
    r.session
    workers = {int(t) for t in os.listdir("/proc/self/task")} - before
    from rmcli.engine.layout import pin_calling_thread
    pinned = pin_calling_thread(r.layout)
    print(json.dumps({"pinned": pinned, "caller": sorted(os.sched_getaffinity(0)),
                      "workers": [sorted(os.sched_getaffinity(t)) for t in workers]}))
    """
    found = run_python(code)
    assert found == {"pinned": [0], "caller": [0], "workers": [[1]]}


def test_cpu_pinned_cli_run_matches_rembg(u2netp_path, tmp_path):
    photo = EXAMPLES / "car-1.jpg"
    done = rmcli("remove", str(photo), "-o", str(tmp_path), "--cpu-binding", "0", "-v")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "\n  intra_threads = 1\n" in err and "\n  caller_cpus = [0]\n" in err
    assert "calling thread pinned to CPUs [0]" in err
    reference = alpha_of(DATA / "rembg-u2netp" / "car-1.alpha.png")
    assert np.abs(alpha_of(tmp_path / "car-1.png") - reference).mean() <= 0.5


# --- openmp-env -------------------------------------------------------------------------


@pytest.mark.parametrize(("omp", "threads"), [(None, 0), ("3", 3), ("0", 0)])
def test_openmp_env_copies_omp_num_threads_like_rembg(u2netp_path, monkeypatch, omp, threads):
    if omp is not None:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    options = options_of(Remover(backend="openmp-env"))
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (threads, threads)
    assert options.enable_mem_pattern is True  # rembg's default options, untouched
    assert entry(options, AFFINITY_ENTRY) is None
    assert entry(options, "session.force_spinning_stop") is None


def test_openmp_env_real_run_matches_rembg_and_bad_omp_is_exit_2(u2netp_path, tmp_path):
    photo = EXAMPLES / "car-1.jpg"
    done = rmcli("remove", str(photo), "-o", str(tmp_path), "--backend", "openmp-env",
                 env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    reference = alpha_of(DATA / "rembg-u2netp" / "car-1.alpha.png")
    assert np.abs(alpha_of(tmp_path / "car-1.png") - reference).mean() <= 0.5
    bad = rmcli("remove", str(photo), "-o", str(tmp_path / "b"), "--backend", "openmp-env",
                env={"OMP_NUM_THREADS": "four"})  # fmt: skip
    assert bad.returncode == 2
    assert "OMP_NUM_THREADS='four'" in bad.stderr.decode()


def test_openmp_env_threads_in_process(u2netp_path):
    code = THREADS_AFTER.format(kwargs=[{"backend": "openmp-env"}])
    assert run_python(code, env={"OMP_NUM_THREADS": "2"})["added"] == 1


# --- shared thread pool -----------------------------------------------------------------


def test_shared_pool_gives_two_sessions_one_set_of_workers(u2netp_path):
    two = [{"intra_threads": 2}, {"intra_threads": 2, "allow_spinning": False}]
    per_session = run_python(THREADS_AFTER.format(kwargs=two))
    shared = [dict(kw, shared_threadpool=True) for kw in two]
    assert per_session["added"] == 2
    assert run_python(THREADS_AFTER.format(kwargs=shared))["added"] == 1


def test_shared_pool_options_and_mixing_is_refused(u2netp_path):
    code = """
    import json
    from rmcli import Remover
    from rmcli.errors import BackendError
    shared = Remover(shared_threadpool=True, intra_threads=2).session.session
    try:
        Remover(intra_threads=2, allow_spinning=False).session
        error = ""
    except BackendError as exc:
        error = str(exc)
    per_session = shared.get_session_options().use_per_session_threads
    print(json.dumps({"per_session": per_session, "error": error}))
    """
    found = run_python(code)
    assert found["per_session"] is False
    assert "set shared_threadpool=true for every session" in found["error"]


def test_shared_pool_is_sized_once_and_a_different_size_is_one_warning(u2netp_path):
    code = """
    import os
    import onnxruntime
    from rmcli import Remover
    before = len(os.listdir("/proc/self/task"))
    Remover(shared_threadpool=True, intra_threads=2).session
    Remover(shared_threadpool=True, intra_threads=1).session
    print(len(os.listdir("/proc/self/task")) - before)
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]  # one worker: the pool of the first session
    warnings = [line for line in done.stderr.splitlines() if "shared thread pool" in line]
    assert warnings == [  # a library logs; Python's last-resort handler prints the message
        "the shared thread pool already has 2 intra-op and 1 inter-op threads; "
        "this session asked for 1/1 and shares it"
    ]


# --- cuda-hybrid ------------------------------------------------------------------------


def test_cuda_hybrid_providers_and_cpu_side(u2netp_path):
    remover = Remover(backend="cuda-hybrid", gpu_mem_limit=512, device_id=1)
    cuda, cpu = remover.backend.providers(remover.settings, remover.layout)
    assert cuda == (
        "CUDAExecutionProvider",
        {
            "device_id": 1,
            "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC",
            "gpu_mem_limit": 512 * 1024 * 1024,
        },
    )
    assert cpu == "CPUExecutionProvider"
    assert remover.layout.intra_threads == min(2, usable_cpu_count())
    assert remover.layout.spinning is False
    options = options_of(remover)
    assert options.intra_op_num_threads == min(2, usable_cpu_count())
    assert entry(options, "session.intra_op.allow_spinning") == "0"


def test_cuda_hybrid_without_onnxruntime_gpu_warns_and_runs_on_cpu(u2netp_path, caplog):
    remover = Remover(backend="cuda-hybrid")
    mask = remover.mask(EXAMPLES / "car-1.jpg")
    assert remover.session.active_providers == ["CPUExecutionProvider"]
    err = caplog.text
    assert "CUDA is not used, running on the CPU" in err and pip_install("gpu") in err
    reference = alpha_of(DATA / "rembg-u2netp" / "car-1.alpha.png")
    assert np.abs(alpha_of(mask) - reference).mean() <= 0.5


def test_cuda_hybrid_strict_without_gpu_is_exit_2(u2netp_path, tmp_path):
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path),
                 "--backend", "cuda-hybrid", env={"RMCLI_STRICT_DEVICE": "1"})  # fmt: skip
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "strict_device" in err and "onnxruntime-gpu is not installed" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.fixture
def cuda_listed(monkeypatch):
    """ORT claims CUDA is available (as onnxruntime-gpu does even without CUDA libraries)."""
    import onnxruntime

    monkeypatch.setattr(
        onnxruntime,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # faked list
def test_cuda_listed_but_not_active_is_caught_from_get_providers(u2netp_path, cuda_listed, caplog):
    remover = Remover(backend="cuda-hybrid")
    loaded = remover.session
    assert loaded.plan.providers[0][0] == "CUDAExecutionProvider"  # CUDA was really asked for
    assert loaded.active_providers == ["CPUExecutionProvider"]
    err = caplog.text
    assert "cuda-hybrid: CUDA is not used, running on the CPU:" in err
    assert "libcuda.so.1 not found" in err
    photo = Image.open(EXAMPLES / "car-1.jpg")
    assert remover.mask(photo).size == photo.size


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")  # faked list
def test_cuda_listed_but_not_active_with_strict_device_raises(u2netp_path, cuda_listed):
    with pytest.raises(BackendError, match="CUDA is not used: .*strict_device is set"):
        Remover(backend="cuda-hybrid", strict_device=True).session  # noqa: B018


# --- rmcli backends ---------------------------------------------------------------------


def test_backends_json_lists_every_backend_without_importing_onnxruntime():
    code = """
    import json, sys
    from rmcli.cli import main
    sys.argv = ["rmcli", "backends", "--json"]
    try:
        main()
    except SystemExit:
        pass
    print(json.dumps({"ort": "onnxruntime" in sys.modules}))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    rows = {row["name"]: row for row in json.loads(out[: out.rindex("]") + 1])}
    assert json.loads(out.strip().splitlines()[-1]) == {"ort": False}
    assert {"cpu-pinned", "openmp-env", "cuda-hybrid"} <= set(rows)
    assert rows["cpu-pinned"]["available"] is True
    assert rows["cpu-pinned"]["providers"] == ["CPUExecutionProvider"]
    assert rows["cuda-hybrid"]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert rows["cuda-hybrid"]["available"] is False
    assert pip_install("gpu") in rows["cuda-hybrid"]["reason"]
    assert rows["cpu-pinned"]["origin"] == "built-in"


def test_negative_gpu_mem_limit_is_a_config_error():
    with pytest.raises(ConfigError, match="gpu_mem_limit"):
        Remover(gpu_mem_limit=-1)
