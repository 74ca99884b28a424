"""The CPUs this process may use: the cgroup quota along its own path (v1 and v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcli import cgroup_cpu_limit

pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds


def _cgroup_tree(root: Path, files: dict[str, str], self_cgroup: str) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = root / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return proc


@pytest.mark.parametrize(
    ("files", "self_cgroup", "limit"),
    [
        # v2: a systemd/Kubernetes child slice tighter than its parent, and the reverse
        (
            {"cpu.max": "max 100000", "kube/pod1/cpu.max": "50000 100000"},
            "0::/kube/pod1\n",
            0.5,
        ),
        (
            {"kube/cpu.max": "150000 100000", "kube/pod1/cpu.max": "400000 100000"},
            "0::/kube/pod1\n",
            1.5,
        ),
        # v1: the child cgroup with cpu.cfs_quota_us=50000
        (
            {
                "cpu/cpu.cfs_quota_us": "-1",
                "cpu/cpu.cfs_period_us": "100000",
                "cpu/slurm/job7/cpu.cfs_quota_us": "50000",
                "cpu/slurm/job7/cpu.cfs_period_us": "100000",
            },
            "4:cpu,cpuacct:/slurm/job7\n1:name=systemd:/slurm\n",
            0.5,
        ),
        # v1 parent tighter than the child
        (
            {
                "cpu,cpuacct/docker/cpu.cfs_quota_us": "100000",
                "cpu,cpuacct/docker/cpu.cfs_period_us": "100000",
                "cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "300000",
                "cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000",
            },
            "3:cpuacct,cpu:/docker/c1\n",
            1.0,
        ),
        # a namespaced container: /proc/self/cgroup names a path the mount does not show
        ({"cpu.max": "200000 100000"}, "0::/host/slice/that/is/not/here\n", 2.0),
        ({"cpu.max": "max 100000"}, "0::/\n", None),
    ],
)
def test_cgroup_quota_of_this_process_is_the_tightest_along_its_own_path(
    tmp_path, files, self_cgroup, limit
):
    proc = _cgroup_tree(tmp_path, files, self_cgroup)
    assert cgroup_cpu_limit(tmp_path, proc) == limit
