"""rmcli against rembg 2.0.86 on the same work, interleaved and repeated, as ratios.

    python benchmarks/bench_vs_rembg.py            # run with the Python that has rmcli

Creates (once) a virtual environment with rembg 2.0.86 in benchmarks/.rembg-venv (or uses
--rembg-venv), places the u2netp weights from rmcli's store in a temporary U2NET_HOME, then
runs, alternating which tool goes first:

- ``rembg p -m u2netp`` vs ``rmcli remove`` on the 13 photos of examples/;
- ``rembg i -m u2netp`` vs ``rmcli remove`` on a 6000x4000 JPEG made from examples/animal-3.jpg;
- ``rembg --help`` vs ``rmcli --help``;

and prints per work the medians of wall time, CPU utilisation (user+system / wall) and peak
memory (max RSS of that child, from wait4) with the ratios rembg/rmcli. Finally, in one
process: rmcli's steady-state time per image (a batch, warmed up) against pure ONNX Runtime
inference of the same session on the same, already pre-processed images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEFAULT_VENV = ROOT / "benchmarks" / ".rembg-venv"
REMBG = "rembg[cli]==2.0.86"


def ensure_rembg(venv: Path) -> Path:
    """The rembg executable of ``venv``, creating the venv and installing rembg if needed."""
    exe = venv / "bin" / "rembg"
    if exe.exists():
        return exe
    print(f"creating {venv} with {REMBG} (once)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, REMBG, "onnxruntime"], check=True)
    return exe


def u2netp_weights() -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "models", "pull", "u2netp"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip())


def measure(cmd: list[str], env: dict[str, str], tmp: Path) -> dict[str, float]:
    """Run ``cmd`` (``{out}`` becomes a fresh output path); its wall seconds, CPU utilisation
    and peak RSS in MB (the child's own rusage, from wait4)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [part.replace("{out}", str(out)) for part in cmd]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}):\n{err[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    shutil.rmtree(out)
    return {"wall": wall, "cpu": cpu / wall, "rss": usage.ru_maxrss / 1024}


def big_jpeg(folder: Path) -> Path:
    """A 6000x4000 JPEG from one photo, made in a child process: this process stays small,
    since a child's max RSS starts from its parent's at fork time."""
    path = folder / "big-6000x4000.jpg"
    code = (
        "import sys; from PIL import Image; "
        "Image.open(sys.argv[1]).convert('RGB')"
        ".resize((6000, 4000), Image.Resampling.LANCZOS).save(sys.argv[2], quality=90)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLES / "animal-3.jpg"), str(path)], check=True
    )
    return path


STEADY = r"""
import json, sys, time, tempfile
from pathlib import Path
from rmcli import Remover
from rmcli.engine.runner import OutputOptions, run_local
from rmcli.images.imaging import load_image
from rmcli.images.inputs import plan_jobs

photos = sorted(Path(sys.argv[1]).glob("*.jpg"))
rounds = int(sys.argv[2])
remover = Remover(model="u2netp")
session = remover.session
tensors = [remover.model.preprocess(load_image(p)) for p in photos]
session.run(tensors[0])
batch, pure = [], []
with tempfile.TemporaryDirectory() as out:
    jobs = plan_jobs([str(p) for p in photos] * 1, Path(out), "png")
    list(run_local(remover, jobs, OutputOptions()))  # warm-up
    for _ in range(rounds):
        start = time.perf_counter()
        for tensor in tensors:
            session.run(tensor)
        pure.append((time.perf_counter() - start) / len(tensors))
        start = time.perf_counter()
        results = list(run_local(remover, jobs, OutputOptions()))
        batch.append((time.perf_counter() - start) / len(jobs))
        assert not any(r.error for r in results)
print(json.dumps({"batch": batch, "pure": pure, "inflight": remover.settings["inflight"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (median)")
    parser.add_argument("--rembg-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    rembg = ensure_rembg(args.rembg_venv)
    rmcli = [sys.executable, "-m", "rmcli"]
    with tempfile.TemporaryDirectory(prefix="bench-vs-rembg-") as tmp:
        tmp = Path(tmp)
        home = tmp / "u2net"
        home.mkdir()
        shutil.copy(u2netp_weights(), home / "u2netp.onnx")
        env = {**os.environ, "U2NET_HOME": str(home)}
        big = big_jpeg(tmp)
        works = {
            "13 photos (folder)": (
                [str(rembg), "p", "-m", "u2netp", str(EXAMPLES), "{out}/p"],
                [*rmcli, "remove", str(EXAMPLES), "-o", "{out}"],
            ),
            "6000x4000 JPEG": (
                [str(rembg), "i", "-m", "u2netp", str(big), "{out}/big.png"],
                [*rmcli, "remove", str(big), "-o", "{out}"],
            ),
            "--help": ([str(rembg), "--help"], [*rmcli, "--help"]),
        }
        for work in works.values():  # warm the page cache and .pyc files of both
            for cmd in work:
                measure(cmd, env, tmp)
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {"rembg": [], "rmcli": []} for name in works
        }
        for rep in range(args.repeats):
            for name, (rembg_cmd, rmcli_cmd) in works.items():
                order = [("rembg", rembg_cmd), ("rmcli", rmcli_cmd)]
                for tool, cmd in order if rep % 2 == 0 else order[::-1]:
                    runs[name][tool].append(measure(cmd, env, tmp))
            print(f"round {rep + 1}/{args.repeats} done", file=sys.stderr)
        steady = subprocess.run(
            [sys.executable, "-c", STEADY, str(EXAMPLES), str(max(3, args.repeats))],
            capture_output=True,
            text=True,
            check=True,
        )
    report(runs, json.loads(steady.stdout), args.markdown)


def report(runs, steady, markdown: bool) -> None:
    rows = []
    for name, tools in runs.items():
        med = {
            tool: {
                key: statistics.median(r[key] for r in results) for key in ("wall", "cpu", "rss")
            }
            for tool, results in tools.items()
        }
        rows.append(
            [
                name,
                f"{med['rembg']['wall']:.2f} s",
                f"{med['rmcli']['wall']:.2f} s",
                f"{med['rembg']['wall'] / med['rmcli']['wall']:.2f}x",
                f"{med['rembg']['cpu'] * 100:.0f}%",
                f"{med['rmcli']['cpu'] * 100:.0f}%",
                f"{med['rembg']['rss']:.0f} MB",
                f"{med['rmcli']['rss']:.0f} MB",
                f"{med['rmcli']['rss'] / med['rembg']['rss']:.2f}x",
            ]
        )
    head = [
        "work",
        "rembg wall",
        "rmcli wall",
        "speed-up",
        "rembg CPU",
        "rmcli CPU",
        "rembg peak",
        "rmcli peak",
        "memory ratio",
    ]
    batch = statistics.median(steady["batch"])
    pure = statistics.median(steady["pure"])
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
        for row in [head, *rows]:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    print(
        f"\nsteady state (13 photos, inflight={steady['inflight']}): rmcli {batch * 1000:.0f} "
        f"ms/image, pure ORT inference of the same session {pure * 1000:.0f} ms/image: "
        f"ratio {batch / pure:.2f}x"
    )


if __name__ == "__main__":
    main()
