"""Backend figures as ratios measured in one interleaved run (never asserted in tests).

    python benchmarks/backends.py [--repeat 3]

1. lowmem vs cpu-pinned: peak RSS, RSS after the batch and wall time for the 13 example photos.
2. shared thread pool vs per-session pools with two sessions loaded (u2netp twice with different
   settings: only u2netp weights are available offline): threads in the process, peak RSS and
   throughput (images per second, alternating sessions).

Every configuration runs in its own fresh process (thread pools and peak memory are
process-wide); configurations are interleaved and repeated, and medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted(str(p) for p in (ROOT / "examples").glob("*.jpg"))

CHILD = """
import json, os, resource, sys, time
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
from rmcli import Remover
from rmcli.images.imaging import load_image
photos = json.loads(sys.argv[1])
configs = json.loads(sys.argv[2])
removers = [Remover(**config) for config in configs]
for remover in removers:
    remover.session
threads = len(os.listdir("/proc/self/task"))
images = [load_image(p) for p in photos]
started = time.perf_counter()
for index, image in enumerate(images):
    removers[index % len(removers)].mask_of(image)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"threads": threads, "peak_mb": peak, "rss_after_mb": rss_mb(),
                  "seconds": seconds, "images_per_s": len(images) / seconds}))
"""

CASES = {
    "cpu-pinned": [{"backend": "cpu-pinned"}],
    "lowmem": [{"backend": "lowmem"}],
    "per-session x2": [
        {"intra_threads": 2},
        {"intra_threads": 2, "allow_spinning": False},
    ],
    "shared x2": [
        {"intra_threads": 2, "shared_threadpool": True},
        {"intra_threads": 2, "allow_spinning": False, "shared_threadpool": True},
    ],
}


def run_case(configs: list[dict]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), json.dumps(PHOTOS), json.dumps(configs)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CASES}
    for _ in range(args.repeat):
        for name, configs in CASES.items():  # interleaved: load changes hit every case alike
            results[name].append(run_case(configs))
    med = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    for name, values in med.items():
        shown = ", ".join(f"{k}={v:.2f}" for k, v in values.items())
        print(f"{name:15} (median of {args.repeat}): {shown}")

    def ratio(a: str, b: str, key: str) -> str:
        return f"{med[a][key] / med[b][key]:.2f}"

    print(
        f"lowmem / cpu-pinned: peak RSS {ratio('lowmem', 'cpu-pinned', 'peak_mb')}, "
        f"RSS after batch {ratio('lowmem', 'cpu-pinned', 'rss_after_mb')}, "
        f"time {ratio('lowmem', 'cpu-pinned', 'seconds')}"
    )
    print(
        f"shared / per-session (2 sessions): threads "
        f"{med['shared x2']['threads']:.0f} vs {med['per-session x2']['threads']:.0f}, "
        f"peak RSS {ratio('shared x2', 'per-session x2', 'peak_mb')}, "
        f"throughput {ratio('shared x2', 'per-session x2', 'images_per_s')}"
    )


if __name__ == "__main__":
    main()
