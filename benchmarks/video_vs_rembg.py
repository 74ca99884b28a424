"""Video: ``ffmpeg | rembg b`` against ``rmcli remove clip.mp4`` and ``ffmpeg | rmcli b``.

    python benchmarks/video_vs_rembg.py                 # 4 s clip; --seconds 10 as the issue
    python benchmarks/video_vs_rembg.py --markdown

Generates a 1280x720 H.264 clip (the example car photo moving across a gradient, 10 fps) with
PyAV, then runs on it, interleaved and ``--repeats`` times (after one unmeasured warm-up run
of each command on a 3-frame clip), with u2netp on the CPU:

- ``ffmpeg -i clip.mp4 -f rawvideo -pix_fmt rgb24 - | rembg b -m u2netp 1280 720 -o out-%05d.png``
  (rembg 2.0.86 with its CLI extra, from ``--rembg-venv``: created in .bench/ when missing);
- ``rmcli remove clip.mp4`` (WebM VP9 with alpha) and ``rmcli remove clip.mp4 --format png``;
- ``ffmpeg ... | rmcli b 1280 720 -o out-%05d.png``.

The ffmpeg binary comes from the imageio-ffmpeg wheel, installed once into .bench/ (not a
project dependency). Reported per command: frames per second (frames / wall), CPU
utilisation (user+system / wall, the whole pipeline), CPU seconds per frame (less sensitive
to other load on the machine than wall time) and peak RSS (the largest process).

Then, in one process with a warm session: the steady frames per second of a clip through
rmcli's pipeline against the session's pure inference rate on the same pre-processed frames;
the flicker measure with and without ``video_smoothing``; and peak RSS of ``rmcli remove`` on
a clip ``--long-factor`` times longer (6: the issue's 60 s against 10 s).
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

from bench_vs_rembg import ensure_rembg, u2netp_weights

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
WIDTH, HEIGHT, FPS = 1280, 720, 10

MAKE_CLIP = r"""
import sys
import av, numpy as np
from PIL import Image
out, seconds, still = sys.argv[1], float(sys.argv[2]), sys.argv[4] == "still"
noise = np.random.default_rng(0)
W, H, FPS = 1280, 720, 10
photo = Image.open(sys.argv[3]).convert("RGB")
photo.thumbnail((W * 2 // 3, H * 2 // 3))
ramp = np.zeros((H, W, 3), np.uint8)
ramp[...] = np.linspace(40, 200, W, dtype=np.uint8)[None, :, None]
ramp[..., 1] = 120
count = int(seconds * FPS)
with av.open(out, "w") as container:
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    stream.codec_context.options = {"preset": "veryfast"}
    for i in range(count):
        image = Image.fromarray(ramp)
        left = (W - photo.width) // 2 if still else (W - photo.width) * i // max(1, count - 1)
        image.paste(photo, (left, (H - photo.height) // 2))
        if still:  # a camera on a tripod: the same scene, sensor noise in every frame
            pixels = np.asarray(image, np.float32) + noise.normal(0, 4, (H, W, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        frame = av.VideoFrame.from_image(image)
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
print(count)
"""

STEADY = r"""
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
from PIL import Image
from rmcli import Remover
from rmcli.contracts.output import ComposeOptions, OutputOptions
from rmcli.video.decode import ClipReader, Frame
from rmcli.video.clip import process_clip
from rmcli.video.probe import probe
from rmcli.video.smoothing import flicker

clip = probe(Path(sys.argv[1]), "clip")
rounds = int(sys.argv[2])
still_clips = [probe(Path(sys.argv[1]), "moving"), probe(Path(sys.argv[3]), "still")]
remover = Remover(model="u2netp")
session = remover.session
reader = ClipReader(clip, with_audio=False)
images = [item.image for item in reader.items() if isinstance(item, Frame)][:20]
reader.close()
tensors = [remover.model.preprocess(image) for image in images]
session.run(tensors[0])
options = OutputOptions(compose=ComposeOptions())
pipeline, pure = [], []
with tempfile.TemporaryDirectory() as out:
    process_clip(remover, clip, Path(out) / "warm.webm", "webm", options)
    for _ in range(rounds):
        start = time.perf_counter()
        for tensor in tensors:
            session.run(tensor)
        pure.append(len(tensors) / (time.perf_counter() - start))
        start = time.perf_counter()
        process_clip(remover, clip, Path(out) / "clip.webm", "webm", options)
        pipeline.append(clip.frames / (time.perf_counter() - start))
    smooth = Remover(model="u2netp", video_smoothing=True)
    masks = {}
    for measured in still_clips:
        for name, used in (("off", remover), ("on", smooth)):
            folder = Path(out) / f"{measured.label}-{name}"
            process_clip(used, measured, folder, "png", options)
            masks[f"{measured.label} {name}"] = flicker(
                np.asarray(Image.open(p).getchannel("A")) for p in sorted(folder.iterdir())
            )
print(json.dumps({"pipeline": pipeline, "pure": pure, "flicker": masks}))
"""


def ffmpeg_binary() -> Path:
    """The ffmpeg of the imageio-ffmpeg wheel, installed once into .bench/."""
    target = BENCH / "imageio-ffmpeg"
    if not target.exists():
        print("installing imageio-ffmpeg into .bench/ (once)...", file=sys.stderr)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(target)]
        subprocess.run([*pip, "imageio-ffmpeg"], check=True)
    found = sorted((target / "imageio_ffmpeg" / "binaries").glob("ffmpeg-*"))
    if not found:
        raise SystemExit(f"no ffmpeg binary under {target}")
    os.chmod(found[0], 0o755)
    return found[0]


def measure(cmd: list[str], env: dict[str, str], tmp: Path, frames: int) -> dict[str, float]:
    """Run ``cmd`` (``{out}`` becomes a fresh folder): fps, CPU utilisation, peak RSS (MB)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [part.replace("{out}", str(out)) for part in cmd]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    written = sum(1 for p in out.rglob("*") if p.is_file())
    if written == 0:
        raise SystemExit(f"{' '.join(cmd)} wrote nothing:\n{err[-2000:]}")
    shutil.rmtree(out)
    cpu = usage.ru_utime + usage.ru_stime  # the shell's waited-for children included
    return {"fps": frames / wall, "cpu": cpu / wall, "rss": usage.ru_maxrss / 1024}


def make_clip(path: Path, seconds: float, still: bool = False) -> int:
    car = ROOT / "examples" / "car-1.jpg"
    kind = "still" if still else "moving"
    done = subprocess.run(
        [sys.executable, "-c", MAKE_CLIP, str(path), str(seconds), str(car), kind],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (10 fps)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command (median)")
    parser.add_argument("--long-factor", type=float, default=6.0, help="long clip / short clip")
    parser.add_argument("--rembg-venv", type=Path, default=BENCH / "rembg-venv")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args()

    rembg = ensure_rembg(args.rembg_venv)
    ffmpeg = ffmpeg_binary()
    rmcli = [sys.executable, "-m", "rmcli"]
    with tempfile.TemporaryDirectory(prefix="video-vs-rembg-") as tmp:
        tmp = Path(tmp)
        home = tmp / "u2net"
        home.mkdir()
        shutil.copy(u2netp_weights(), home / "u2netp.onnx")
        env = {**os.environ, "U2NET_HOME": str(home)}
        clip = tmp / "clip.mp4"
        frames = make_clip(clip, args.seconds)
        feed = f"{ffmpeg} -v error -i {clip} -f rawvideo -pix_fmt rgb24 -"
        rmcli_sh = " ".join(rmcli)
        commands = {
            "ffmpeg | rembg b": [
                "sh", "-c", f"{feed} | {rembg} b -m u2netp {WIDTH} {HEIGHT} -o {{out}}/f-%05d.png",
            ],
            "rmcli remove clip.mp4 (webm)": [*rmcli, "remove", str(clip), "-o", "{out}"],
            "rmcli remove clip.mp4 --format png": [
                *rmcli, "remove", str(clip), "-o", "{out}", "--format", "png",
            ],
            "ffmpeg | rmcli b": [
                "sh", "-c", f"{feed} | {rmcli_sh} b {WIDTH} {HEIGHT} -o {{out}}/f-%05d.png",
            ],
        }  # fmt: skip
        warm = tmp / "warm.mp4"
        warm_frames = make_clip(warm, 0.3)
        for cmd in commands.values():  # warm the page cache, .pyc files and numba's cache
            measure([part.replace(str(clip), str(warm)) for part in cmd], env, tmp, warm_frames)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for rep in range(args.repeats):
            order = list(commands.items())
            for name, cmd in order if rep % 2 == 0 else order[::-1]:
                runs[name].append(measure(cmd, env, tmp, frames))
                print(f"  {name}: {runs[name][-1]['fps']:.2f} fps", file=sys.stderr)
        still = tmp / "still.mp4"
        make_clip(still, 2, still=True)
        steady = json.loads(
            subprocess.run(
                [sys.executable, "-c", STEADY, str(clip), str(max(2, args.repeats)), str(still)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        long_clip = tmp / "long.mp4"
        long_frames = make_clip(long_clip, args.seconds * args.long_factor)
        memory = {"short": [], "long": []}
        for _ in range(args.repeats):
            for name, path, count in (("short", clip, frames), ("long", long_clip, long_frames)):
                cmd = [*rmcli, "remove", str(path), "-o", "{out}"]
                memory[name].append(measure(cmd, env, tmp, count)["rss"])
    report(runs, steady, memory, frames, long_frames, args.markdown)


def report(runs, steady, memory, frames, long_frames, markdown: bool) -> None:
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    base = med["ffmpeg | rembg b"]["fps"]
    base_cpu = med["ffmpeg | rembg b"]["cpu"] / base  # CPU seconds per frame
    rows = [
        (
            name,
            f"{m['fps']:.2f}",
            f"{m['fps'] / base:.2f}x",
            f"{m['cpu']:.2f}",
            f"{m['cpu'] / m['fps']:.2f}",
            f"{base_cpu / (m['cpu'] / m['fps']):.2f}x",
            f"{m['rss']:.0f}",
        )
        for name, m in med.items()
    ]
    head = (
        "command", "fps", "vs rembg b", "CPU cores", "CPU s/frame", "less CPU", "peak RSS MB",
    )  # fmt: skip
    print(f"{frames} frames of {WIDTH}x{HEIGHT} at {FPS} fps, u2netp, CPU")
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    else:
        for row in (head, *rows):
            print(f"{row[0]:<36}" + "".join(f"{cell:>13}" for cell in row[1:]))
    pipeline = statistics.median(steady["pipeline"])
    pure = statistics.median(steady["pure"])
    print(
        f"\nsteady state, warm session: pipeline {pipeline:.2f} fps, pure inference "
        f"{pure:.2f} fps: ratio {pipeline / pure:.2f}"
    )
    for kind in ("moving", "still"):
        off, on = steady["flicker"][f"{kind} off"], steady["flicker"][f"{kind} on"]
        print(
            f"flicker, {kind} subject (mean |alpha change| between frames, 0-255): "
            f"{off:.3f} without smoothing, {on:.3f} with video_smoothing ({on / off:.2f}x)"
        )
    short, long = statistics.median(memory["short"]), statistics.median(memory["long"])
    print(
        f"peak RSS of rmcli remove: {frames} frames {short:.0f} MB, {long_frames} frames "
        f"{long:.0f} MB: ratio {long / short:.3f}"
    )


if __name__ == "__main__":
    main()
