"""intra_threads = auto against fixed 1 and fixed 2 threads, with a busy neighbour process.

A neighbour spins on the last allowed CPU for the whole run. Each configuration is measured
by ``rmcli.tools.bench`` (a fresh worker process per measurement), interleaved round by round so
that changing load from other processes hits all configurations alike. Prints a Markdown
table of medians over the rounds and the ratios against fixed 2 threads.

    .venv/bin/python benchmarks/bench_auto_threads.py [--rounds 3] [-n 2] [--no-neighbour]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rmcli.cpus import allowed_cpus
from rmcli.tools.bench import EXAMPLES, Configuration, run_configuration

BUSY_LOOP = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"
IMAGES = [EXAMPLES / name for name in ("car-1.jpg", "girl-1.jpg", "animal-2.jpg")]
SETTINGS = {"auto": "auto", "fixed 1": "1", "fixed 2": "2"}


def measure(rounds: int, runs: int, images: list[Path]) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {label: [] for label in SETTINGS}
    for round_no in range(rounds):
        order = list(SETTINGS.items())
        order = order[round_no % len(order) :] + order[: round_no % len(order)]  # rotate
        for label, threads in order:
            row = run_configuration(
                Configuration(label, "cpu-pinned", {"intra_threads": threads}), images, runs
            )
            if row.error:
                sys.exit(f"{label}: {row.error}")
            results[label].append(row.result)
    return results


def table(results: dict[str, list[dict]]) -> str:
    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    base = med("fixed 2", "median_seconds")
    lines = [
        "| intra_threads | threads used | median ms/image | p90 ms | CPU cores busy "
        "| CPU s per image | speed vs fixed 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in SETTINGS:
        used = sorted({r["intra_threads"] for r in results[label]})
        cpu_per_image = statistics.median(
            r["cpu_cores_used"] / r["images_per_second"] for r in results[label]
        )
        lines.append(
            f"| {label} | {','.join(map(str, used))} | {1000 * med(label, 'median_seconds'):.0f} "
            f"| {1000 * med(label, 'p90_seconds'):.0f} | {med(label, 'cpu_cores_used'):.2f} "
            f"| {cpu_per_image:.3f} | {base / med(label, 'median_seconds'):.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--runs", type=int, default=2)
    parser.add_argument("--no-neighbour", action="store_true", help="Measure without it.")
    args = parser.parse_args()
    neighbour = None
    if not args.no_neighbour:
        cpu = allowed_cpus()[-1]
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(cpu)])
        time.sleep(0.5)
        print(f"busy neighbour on CPU {cpu} (pid {neighbour.pid})", file=sys.stderr)
    try:
        results = measure(args.rounds, args.runs, IMAGES)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    print(
        f"{args.rounds} rounds x {args.runs} passes over {len(IMAGES)} images, "
        f"allowed CPUs {allowed_cpus()}, neighbour: {'no' if args.no_neighbour else 'yes'}"
    )
    print(table(results))


if __name__ == "__main__":
    main()
