"""Throughput of --executor dask (2 workers x 1 thread) against the local executor.

    python benchmarks/dask_throughput.py [--repeat 5] [--images examples]

Two measurements, interleaved and repeated, medians reported with their ratio:
- cold: the whole CLI run (`rmcli remove DIR -o OUT`), Dask starting its own LocalCluster;
- warm: `Remover.map` on an already running 2 x 1 LocalCluster whose workers hold their
  session, against `Remover.map` with the local executor and a session already built.
Needs `pip install -e '.[dask]'`. Timings are ratios measured in one run: on a shared machine
only the ratio means something.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from rmcli import Remover

ROOT = Path(__file__).resolve().parent.parent


def cli(images: Path, out: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rmcli", "remove", str(images), "-o", str(out), *extra],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def mapped(remover: Remover, images: Path, out: Path, executor: str) -> float:
    started = time.perf_counter()
    results = list(remover.map([images], out, executor=executor))
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--images", type=Path, default=ROOT / "examples")
    args = parser.parse_args()
    count = len(list(args.images.glob("*.jpg")))
    times: dict[str, list[float]] = {
        k: [] for k in ("cold local", "cold dask", "warm local", "warm dask")
    }
    with (
        tempfile.TemporaryDirectory() as scratch,
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        out = Path(scratch)
        local = Remover()
        dask = Remover(dask_scheduler=cluster.scheduler_address)
        mapped(local, args.images, out / "w", "local")  # build the sessions once
        mapped(dask, args.images, out / "w", "dask")
        for _ in range(args.repeat):
            for name, run in (
                ("cold local", lambda: cli(args.images, out / "c")),
                ("cold dask", lambda: cli(args.images, out / "c", "--executor", "dask")),
                ("warm local", lambda: mapped(local, args.images, out / "w", "local")),
                ("warm dask", lambda: mapped(dask, args.images, out / "w", "dask")),
            ):
                shutil.rmtree(out / "c", ignore_errors=True)
                times[name].append(run())
        rss = client.run(lambda: __import__("psutil").Process().memory_info().rss)
    print(f"{count} images, {args.repeat} interleaved repeats, medians:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<11} {median:6.2f} s  {count / median:5.2f} images/s")
    for kind in ("cold", "warm"):
        ratio = statistics.median(times[f"{kind} local"]) / statistics.median(times[f"{kind} dask"])
        print(f"  {kind}: dask throughput = {ratio:.2f} x local")
    print("  worker RSS after the runs: " + ", ".join(f"{v / 2**20:.0f} MiB" for v in rss.values()))


if __name__ == "__main__":
    main()
