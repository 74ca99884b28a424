"""Executors are plugins: lookup, availability, and results back in input order."""

from __future__ import annotations

import importlib.util
import re

import pytest
from helpers import EXAMPLES, rmcli

from rmcli.contracts.jobs import Job, Result
from rmcli.engine.registry import executors, get_executor
from rmcli.engine.runner import in_input_order
from rmcli.errors import UsageError
from rmcli.extras import pip_install


def test_builtin_executors_are_registered_through_the_hook():
    assert {"local", "dask"} <= set(executors())
    assert get_executor("local").in_process


@pytest.mark.slow  # a subprocess
def test_unknown_executor_is_a_usage_error_naming_the_known_ones(tmp_path):
    done = rmcli("remove", "missing.jpg", "-o", str(tmp_path), "--executor", "dusk")
    assert done.returncode == 2
    assert "unknown executor 'dusk' from flag --executor (did you mean 'dask'?)" in (
        done.stderr.decode()
    )


def test_dask_without_the_extra_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name)
    )
    with pytest.raises(UsageError, match=re.escape(pip_install("dask"))):
        get_executor("dask")


def test_results_finishing_out_of_order_are_reported_in_input_order():
    results = [Result(Job(f"in{i}", None, None)) for i in range(4)]
    finished = [(2, results[2]), (0, results[0]), (3, results[3]), (1, results[1])]
    seen = []
    ordered = in_input_order(finished, on_done=lambda r: seen.append(r.job.label))
    assert list(ordered) == results
    assert seen == ["in2", "in0", "in3", "in1"]  # progress moves as they finish


def test_an_interrupted_run_still_reports_every_finished_result():
    results = [Result(Job(f"in{i}", None, None)) for i in range(4)]
    finished = [(3, results[3]), (1, results[1])]  # 0 and 2 never started
    assert list(in_input_order(finished)) == [results[1], results[3]]


@pytest.mark.slow  # a subprocess
def test_a_bad_scheduler_address_is_one_line_and_exit_2(tmp_path):
    done = rmcli(
        "remove", str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path), "--executor", "dask",
        "--scheduler", "nope://host",
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().startswith(
        "rmcli: error: cannot reach the Dask scheduler 'nope://host' (flag --scheduler): "
    )
    assert "Traceback" not in done.stderr.decode()
