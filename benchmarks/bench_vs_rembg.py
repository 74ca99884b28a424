"""rmcli against rembg 2.0.86 on the same work, interleaved and repeated, as ratios.

    python benchmarks/bench_vs_rembg.py            # run with the Python that has rmcli
    .venv-ov/bin/python benchmarks/bench_vs_rembg.py \
        --config 'openvino bf16=--backend openvino --precision bf16' \
        --config 'openvino fp32=--backend openvino' --config 'cpu-pinned='

Creates (once) a virtual environment with rembg 2.0.86 in benchmarks/.rembg-venv (or uses
--rembg-venv; ``--setup`` only creates it, as CI does for tests/test_rembg_compat.py),
places the u2netp weights from rmcli's store in a temporary U2NET_HOME, then runs,
alternating which tool goes first:

- ``rembg p -m u2netp`` vs ``rmcli remove`` on the 13 photos of examples/;
- ``rembg i -m u2netp`` vs ``rmcli remove`` on a 6000x4000 JPEG made from examples/animal-3.jpg;
- ``rembg --help`` vs ``rmcli --help``;

and prints per work the medians of wall time, CPU utilisation (user+system / wall) and peak
memory (max RSS of that child, from wait4) with the ratios rembg/rmcli, and how far rmcli's
alpha is from rembg's (mean absolute difference per photo at full resolution, 0-255: the
mean over the photos and the worst photo). Each ``--config LABEL=ARGS`` is one rmcli
configuration (extra ``rmcli remove`` arguments), measured in the same interleaved rounds
against the same rembg runs; without it, one configuration with no extra arguments. Finally, in one
process: rmcli's steady-state time per image (a batch, warmed up) against pure ONNX Runtime
inference of the same session on the same, already pre-processed images.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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
    """The rembg executable of ``venv``, creating the venv and installing rembg if needed,
    on the ONNX Runtime and Pillow versions rmcli runs on here (so the comparison is of the
    tools, not of two Pillow releases' resampling)."""
    import onnxruntime
    import PIL

    exe = venv / "bin" / "rembg"
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q"]
    if not exe.exists():
        print(f"creating {venv} with {REMBG} (once)...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([*pip, REMBG, f"onnxruntime=={onnxruntime.__version__}"], check=True)
    theirs = subprocess.run(
        [python, "-c", "import PIL; print(PIL.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    if theirs != PIL.__version__:  # --no-deps: gradio (rembg s's UI) may pin an older Pillow
        subprocess.run([*pip, "--no-deps", f"pillow=={PIL.__version__}"], check=True)
    return exe


def u2netp_weights() -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "models", "pull", "u2netp"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip())


def measure(
    cmd: list[str], env: dict[str, str], tmp: Path, keep: Path | None = None
) -> dict[str, float]:
    """Run ``cmd`` (``{out}`` becomes a fresh output path, or ``keep``); its wall seconds, CPU
    utilisation and peak RSS in MB (the child's own rusage, from wait4)."""
    out = keep or Path(tempfile.mkdtemp(dir=tmp))
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
    if keep is None:
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


def parse_configs(texts: list[str] | None) -> dict[str, list[str]]:
    """``LABEL=ARGS`` pairs into {label: argument list}; by default one, "rmcli", no arguments."""
    if not texts:
        return {"rmcli": []}
    configs = {}
    for text in texts:
        label, sep, rest = text.partition("=")
        if not sep or not label.strip():
            raise SystemExit(f"--config {text!r} is not LABEL=ARGS")
        configs[label.strip()] = shlex.split(rest)
    return configs


def alpha_errors(ours: Path, theirs: Path, stems: list[str]) -> list[float]:
    """Mean absolute alpha difference per photo (0-255) between two output folders."""
    import numpy as np
    from PIL import Image

    errors = []
    for stem in stems:
        a = np.asarray(Image.open(ours / f"{stem}.png").getchannel("A"), dtype=np.int16)
        b = np.asarray(Image.open(theirs / f"{stem}.png").getchannel("A"), dtype=np.int16)
        errors.append(float(np.abs(a - b).mean()))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (median)")
    parser.add_argument("--rembg-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--config",
        action="append",
        metavar="LABEL=ARGS",
        help="an rmcli configuration: a label and extra `rmcli remove` arguments (repeatable)",
    )
    parser.add_argument("--no-steady", action="store_true", help="skip the steady-state part")
    parser.add_argument(
        "--setup", action="store_true", help="only create the rembg venv (CI: the parity tests)"
    )
    args = parser.parse_args()
    configs = parse_configs(args.config)

    rembg = ensure_rembg(args.rembg_venv)
    if args.setup:
        print(rembg)
        return
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
                [str(rembg), "p", "-m", "u2netp", str(EXAMPLES), "{out}"],
                {
                    c: [*rmcli, "remove", str(EXAMPLES), "-o", "{out}", *a]
                    for c, a in configs.items()
                },
            ),
            "6000x4000 JPEG": (
                [str(rembg), "i", "-m", "u2netp", str(big), "{out}/big-6000x4000.png"],
                {c: [*rmcli, "remove", str(big), "-o", "{out}", *a] for c, a in configs.items()},
            ),
            "--help": ([str(rembg), "--help"], {c: [*rmcli, "--help"] for c in configs}),
        }
        stems = {
            "13 photos (folder)": sorted(p.stem for p in EXAMPLES.glob("*.jpg")),
            "6000x4000 JPEG": ["big-6000x4000"],
        }
        kept_outputs: dict[str, dict[str, Path]] = {}
        for name, (rembg_cmd, rmcli_cmds) in works.items():
            # warm the page cache and .pyc files of both; keep these outputs to compare alpha
            kept = {"rembg": tmp / "kept" / name / "rembg"}
            kept["rembg"].mkdir(parents=True)
            measure(rembg_cmd, env, tmp, keep=kept["rembg"])
            for label, cmd in rmcli_cmds.items():
                kept[label] = tmp / "kept" / name / f"rmcli-{len(kept)}"
                kept[label].mkdir(parents=True)
                measure(cmd, env, tmp, keep=kept[label])
            kept_outputs[name] = kept
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {tool: [] for tool in ["rembg", *configs]} for name in works
        }
        for rep in range(args.repeats):
            for name, (rembg_cmd, rmcli_cmds) in works.items():
                order = [("rembg", rembg_cmd), *rmcli_cmds.items()]
                for tool, cmd in order if rep % 2 == 0 else order[::-1]:
                    runs[name][tool].append(measure(cmd, env, tmp))
            print(f"round {rep + 1}/{args.repeats} done", file=sys.stderr)
        # only now: decoding the outputs grows this process, and a child's max RSS starts
        # from its parent's at fork time
        errors = {
            name: {
                label: alpha_errors(folder, kept_outputs[name]["rembg"], stems[name])
                for label, folder in kept_outputs[name].items()
                if label != "rembg"
            }
            for name in stems
        }
        steady = None
        if not args.no_steady:
            done = subprocess.run(
                [sys.executable, "-c", STEADY, str(EXAMPLES), str(max(3, args.repeats))],
                capture_output=True,
                text=True,
            )
            if done.returncode == 0:
                steady = json.loads(done.stdout)
            else:
                print(f"steady state not measured: {done.stderr.strip()[-300:]}", file=sys.stderr)
    report(runs, steady, args.markdown, errors)
    if errors:
        print_errors(errors, args.markdown)


def print_errors(errors: dict[str, dict[str, list[float]]], markdown: bool) -> None:
    """Per photo alpha errors against rembg, one column per rmcli configuration."""
    photos = sorted(p.stem for p in EXAMPLES.glob("*.jpg"))
    folder = errors.get("13 photos (folder)", {})
    if not folder:
        return
    labels = list(folder)
    head = ["photo", *[f"{label} alpha error" for label in labels]]
    rows = [
        [stem, *[f"{folder[label][i]:.2f}" for label in labels]] for i, stem in enumerate(photos)
    ]
    print()
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [head, *rows]:
            print("  ".join(row))


def report(runs, steady, markdown: bool, errors=None) -> None:
    errors = errors or {}
    rows = []
    for name, tools in runs.items():
        med = {
            tool: {
                key: statistics.median(r[key] for r in results) for key in ("wall", "cpu", "rss")
            }
            for tool, results in tools.items()
        }
        for label in [t for t in tools if t != "rembg"]:
            err = errors.get(name, {}).get(label)
            rows.append(
                [
                    name,
                    label,
                    f"{med['rembg']['wall']:.2f} s",
                    f"{med[label]['wall']:.2f} s",
                    f"{med['rembg']['wall'] / med[label]['wall']:.2f}x",
                    f"{med['rembg']['cpu'] * 100:.0f}%",
                    f"{med[label]['cpu'] * 100:.0f}%",
                    f"{med['rembg']['rss']:.0f} MB",
                    f"{med[label]['rss']:.0f} MB",
                    f"{med[label]['rss'] / med['rembg']['rss']:.2f}x",
                    f"{sum(err) / len(err):.2f}/{max(err):.2f}" if err else "-",
                ]
            )
    head = [
        "work",
        "rmcli configuration",
        "rembg wall",
        "rmcli wall",
        "speed-up",
        "rembg CPU",
        "rmcli CPU",
        "rembg peak",
        "rmcli peak",
        "memory ratio",
        "alpha error mean/worst",
    ]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
        for row in [head, *rows]:
            print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))
    if steady:
        batch = statistics.median(steady["batch"])
        pure = statistics.median(steady["pure"])
        print(
            f"\nsteady state (13 photos, inflight={steady['inflight']}, default settings): rmcli "
            f"{batch * 1000:.0f} ms/image, pure ORT inference of the same session "
            f"{pure * 1000:.0f} ms/image: ratio {batch / pure:.2f}x"
        )


if __name__ == "__main__":
    main()
