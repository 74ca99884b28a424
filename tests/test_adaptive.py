"""intra_threads = auto: the thread count follows the idle share of the allowed cores."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rmcli.config.settings import resolve
from rmcli.cpus import allowed_cpus, usable_cpu_count
from rmcli.engine.adaptive import idle_fractions, read_cpu_times, threads_for_idle
from rmcli.engine.layout import resolve_layout
from rmcli.engine.registry import get_backend

BUSY_LOOP = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"


@pytest.fixture
def busy_cpu():
    """A neighbour process spinning on the last allowed CPU; yields that CPU."""
    cpu = allowed_cpus()[-1]
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(cpu)])
    time.sleep(0.3)  # let it start spinning
    yield cpu
    proc.kill()
    proc.wait()


def test_thread_count_is_the_idle_capacity_rounded_within_limits():
    assert threads_for_idle([0.0, 1.0], limit=2) == 1  # one core busy, one idle
    assert threads_for_idle([1.0, 1.0], limit=2) == 2
    assert threads_for_idle([0.5, 0.5], limit=2) == 1
    assert threads_for_idle([0.0, 0.0], limit=2) == 1  # never zero threads
    assert threads_for_idle([1.0] * 8, limit=4) == 4  # capped by the cgroup quota


def test_proc_stat_is_read_per_cpu(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  10 0 10 100 5 0 0 0 0 0\n"
        "cpu0 4 0 6 50 2 0 0 0 0 0\n"
        "cpu1 6 0 4 50 3 0 0 0 0 0\n"
        "intr 123 4 5\n"
    )
    assert read_cpu_times(stat) == {0: (52, 62), 1: (53, 63)}
    assert read_cpu_times(tmp_path / "missing") == {}


def test_a_cpu_kept_busy_by_a_neighbour_is_measured_busy(busy_cpu):
    assert idle_fractions([busy_cpu])[busy_cpu] < 0.5


@pytest.mark.skipif(len(allowed_cpus()) < 2, reason="needs two allowed CPUs")
def test_auto_leaves_the_busy_core_to_the_neighbour(busy_cpu):
    other = next(cpu for cpu in allowed_cpus() if cpu != busy_cpu)
    backend = get_backend("cpu-pinned")
    both = resolve({"intra_threads": "auto", "cpu_binding": f"{other},{busy_cpu}"})
    assert resolve_layout(both, backend).intra_threads == 1
    fixed = resolve({"intra_threads": 2, "cpu_binding": f"{other},{busy_cpu}"})
    assert resolve_layout(fixed, backend).intra_threads == 2


def test_auto_without_binding_stays_within_the_usable_cores():
    layout = resolve_layout(resolve({"intra_threads": "auto"}), get_backend("cpu-pinned"))
    assert 1 <= layout.intra_threads <= usable_cpu_count()
