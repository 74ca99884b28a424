"""Start-up time of the ``rmcli`` command: median wall and CPU seconds of repeated runs.

    python benchmarks/startup.py [--runs 10] [--rmcli PATH [--rmcli PATH...]]

Times ``rmcli --help``, ``rmcli remove --help`` and two shell completions (the program runs
on every Tab): a sub-command name and a ``remove`` option, through Click's ``_RMCLI_COMPLETE``
protocol. Each run is a fresh process; the cases are interleaved and the medians reported,
with the targets for the first two (0.12 s and 0.2 s, wall). CPU seconds (user + system)
say the same on a busy machine, where the wall time also counts waiting for a core.
``--rmcli`` times another installation's script instead (e.g. an older release); given several
times, the installations are interleaved too, for a before/after on the same busy machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMPLETE = {"_RMCLI_COMPLETE": "complete_bash"}
CASES = {
    "rmcli --help": (["--help"], {}, 0.12),
    "rmcli remove --help": (["remove", "--help"], {}, 0.2),
    "complete 'rmcli re'": ([], {**COMPLETE, "COMP_WORDS": "rmcli re", "COMP_CWORD": "1"}, None),
    "complete 'rmcli remove --ou'": (
        [],
        {**COMPLETE, "COMP_WORDS": "rmcli remove --ou", "COMP_CWORD": "2"},
        None,
    ),
}


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.decode()[-500:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--rmcli", action="append", help="the script to time (default: this one)")
    args = parser.parse_args()
    scripts = args.rmcli or [str(Path(sys.executable).parent / "rmcli")]
    runs = [(script, name) for script in scripts for name in CASES]
    walls: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    cpus: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for repeat in range(args.runs + 1):  # the first round only warms the file cache
        for script, name in runs:
            argv, extra, _ = CASES[name]
            wall, cpu = timed([script, *argv], {**os.environ, **extra})
            if repeat:
                walls[script, name].append(wall)
                cpus[script, name].append(cpu)
    for script in scripts:
        print(f"{script}: median of {args.runs} runs")
        print(f"  {'case':<30} {'wall s':>7} {'cpu s':>7}  target (wall)")
        for name, (_, _, target) in CASES.items():
            wall = statistics.median(walls[script, name])
            cpu = statistics.median(cpus[script, name])
            met = "met" if target is not None and wall <= target else "MISSED"
            verdict = "" if target is None else f"<= {target} s: {met}"
            print(f"  {name:<30} {wall:7.3f} {cpu:7.3f}  {verdict}")


if __name__ == "__main__":
    main()
