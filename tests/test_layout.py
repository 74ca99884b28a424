"""The one thread-layout authority: every backend's answer from the same table."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from rmcli import CoreBudget, usable_cpu_count
from rmcli.config.settings import resolve
from rmcli.engine.layout import apply_layout, resolve_layout
from rmcli.engine.registry import get_backend

pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds

ROOT = Path(__file__).resolve().parent.parent
USABLE = usable_cpu_count()
IDLE_ONE = lambda cpus, limit: 1  # noqa: E731  the idle-core measurement of "auto", fixed

# backend -> {case: (intra_threads, inter_threads, spinning, settings reported as ignored)}
# "usable" stands for the usable cores here; None is ONNX Runtime's own default.
CASES = {
    "unset": {},
    "auto": {"intra_threads": "auto"},
    "explicit 3": {"intra_threads": 3},
    "inter 2, sequential": {"inter_threads": 2},
    "inter 2, parallel": {"inter_threads": 2, "execution_mode": "parallel"},
    "no spinning": {"allow_spinning": False},
}
TABLE = {
    "cpu-pinned": {
        "unset": ("usable", 1, True, set()),
        "auto": (1, 1, True, set()),
        "explicit 3": (3, 1, True, set()),
        "inter 2, sequential": ("usable", 1, True, {"inter_threads"}),
        "inter 2, parallel": ("usable", 2, True, set()),
        "no spinning": ("usable", 1, False, set()),
    },
    "cuda-hybrid": {
        "unset": (min(2, USABLE), 1, False, set()),
        "auto": (1, 1, False, set()),
        "explicit 3": (3, 1, False, set()),
        "inter 2, sequential": (min(2, USABLE), 1, False, {"inter_threads"}),
        "inter 2, parallel": (min(2, USABLE), 1, False, {"execution_mode", "inter_threads"}),
        "no spinning": (min(2, USABLE), 1, False, {"allow_spinning"}),
    },
    "openmp-env": {
        "unset": (None, None, None, set()),
        "auto": (None, None, None, {"intra_threads"}),
        "explicit 3": (None, None, None, {"intra_threads"}),
        "inter 2, sequential": (None, None, None, {"inter_threads"}),
        "inter 2, parallel": (None, None, None, {"inter_threads", "execution_mode"}),
        "no spinning": (None, None, None, {"allow_spinning"}),
    },
    "lowmem": {
        "unset": ("usable", 1, False, set()),
        "auto": (1, 1, False, set()),
        "explicit 3": (3, 1, False, set()),
        "inter 2, sequential": ("usable", 1, False, {"inter_threads"}),
        "inter 2, parallel": ("usable", 1, False, {"execution_mode", "inter_threads"}),
        "no spinning": ("usable", 1, False, {"allow_spinning"}),
    },
}


def _warned(caplog) -> set[str]:
    return {
        r.getMessage().split("=")[0]
        for r in caplog.records
        if r.levelno == logging.WARNING and "is ignored by backend" in r.getMessage()
    }


@pytest.mark.parametrize("backend", sorted(TABLE))
@pytest.mark.parametrize("case", sorted(CASES))
def test_each_backend_answers_the_same_table(backend, case, caplog, monkeypatch):
    if backend == "lowmem":
        pytest.importorskip("rmcli_lowmem")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    intra, inter, spinning, ignored = TABLE[backend][case]
    settings = resolve(CASES[case])
    layout = resolve_layout(settings, get_backend(backend), measure_idle=IDLE_ONE)
    assert layout.intra_threads == (USABLE if intra == "usable" else intra)
    assert layout.inter_threads == inter
    assert layout.spinning == spinning
    assert _warned(caplog) == ignored  # one warning per given setting the backend ignores


def test_openmp_env_takes_omp_num_threads_like_rembg(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    layout = resolve_layout(resolve(), get_backend("openmp-env"))
    assert (layout.intra_threads, layout.inter_threads) == (3, 3)


def test_more_threads_than_usable_cores_warns_naming_the_source(caplog):
    settings = resolve({"intra_threads": USABLE + 2})
    resolve_layout(settings, get_backend("cpu-pinned"))
    assert f"intra_threads={USABLE + 2} (flag --intra-threads) is more than the {USABLE}" in (
        caplog.text
    )


def test_the_layout_is_applied_to_the_session_options():
    import onnxruntime as ort

    settings = resolve({"intra_threads": 2, "execution_mode": "parallel", "inter_threads": 2})
    layout = resolve_layout(settings, get_backend("cpu-pinned"))
    options = ort.SessionOptions()
    apply_layout(options, layout)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 2)
    assert options.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_encode_threads_share_the_usable_cores_between_images_in_flight():
    for inflight in (1, 2, 4):
        layout = resolve_layout(resolve({"inflight": inflight}), get_backend("cpu-pinned"))
        assert layout.encode_threads == max(1, USABLE // inflight)
    assert resolve_layout(resolve(), get_backend("cpu-pinned"), cores=8).encode_threads == 4


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("slots", [1, 2, 3, 4, 32])
def test_a_core_budget_never_hands_out_more_threads_than_cores(cores, slots):
    split = CoreBudget(cores).split(slots)
    assert sum(split) <= cores and min(split) >= 1
    assert len(split) == min(slots, cores)
    settings = CoreBudget(cores).slot_settings(resolve(), slots)
    assert settings["intra_threads"] * len(split) <= cores
    assert "core budget" in settings.source("intra_threads")


def test_thread_counts_are_assigned_in_exactly_one_module():
    assigning = set()
    for path in (ROOT / "rmcli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr in {
                        "intra_op_num_threads",
                        "inter_op_num_threads",
                    }:
                        assigning.add(path.relative_to(ROOT).as_posix())
    assert assigning == {"rmcli/engine/layout.py"}
