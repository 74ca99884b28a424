#!/usr/bin/env python3
"""Alpha matting time on a 6000x4000 photo, and matting speed against rembg 2.0.86.

    .venv/bin/python benchmarks/matting_large.py [--rembg /work/rembg-venv/bin/rembg] [--runs 3]

1. Makes a 6000x4000 JPEG by upscaling examples/animal-3.jpg and times
   ``rmcli remove -a`` (bounded: matted at ``matting_max_pixels``) against plain
   ``rmcli remove`` on it: wall time and peak RSS of the child process.
2. On the original 1440x1079 photo, times ``rembg i -m u2netp -a`` against
   ``rmcli remove -a`` with the bound raised above the photo (the same full-size matting),
   interleaved, and prints the median ratio. rembg is not run on the 24 MP photo: its
   full-size closed-form matting needs tens of GB there.
Timings on a shared machine are noisy: read the medians and the ratio, not single runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "animal-3.jpg"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child run; a failure stops the benchmark."""
    start = time.perf_counter()
    child = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {stderr.decode()[-500:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rembg", default="/work/rembg-venv/bin/rembg")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rmcli = [sys.executable, "-m", "rmcli", "remove", "--model", "u2netp"]
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "animal-3-6000x4000.jpg"
        Image.open(PHOTO).resize((6000, 4000), Image.Resampling.LANCZOS).save(big, quality=92)
        print("6000x4000 (24 MP), rmcli only:")
        for label, extra in (("plain", []), ("-a (bounded)", ["-a"])):
            runs = [timed([*rmcli, str(big), "-o", f"{tmp}/{i}", *extra]) for i in range(2)]
            wall = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            print(f"  rmcli remove {label:13s} median {wall:6.1f} s, peak RSS {peak:.0f} MiB")

        print(f"{PHOTO.name} 1440x1079, full-size matting in both (interleaved):")
        full = {"RMCLI_MATTING_MAX_PIXELS": str(1440 * 1079 + 1)}
        ours, theirs = [], []
        for i in range(args.runs):
            rembg = [args.rembg, "i", "-m", "u2netp", "-a", str(PHOTO), f"{tmp}/r{i}.png"]
            theirs.append(timed(rembg)[0])
            ours.append(timed([*rmcli, str(PHOTO), "-o", f"{tmp}/o{i}", "-a"], full)[0])
        ratio = statistics.median(theirs) / statistics.median(ours)
        print(f"  rembg i -a   median {statistics.median(theirs):6.1f} s")
        print(f"  rmcli -a     median {statistics.median(ours):6.1f} s")
        print(f"  rembg / rmcli = {ratio:.2f}")


if __name__ == "__main__":
    main()
