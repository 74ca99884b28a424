"""Clips in, clips with alpha out: generated with PyAV, cut out by the real u2netp, decoded back.

Clips are kept to a handful of small frames: u2netp costs the same per frame at any size.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import CAR, rmcli
from PIL import Image

from rmcli.extras import pip_install

av = pytest.importorskip("av")

FPS = 5


def background(width: int, height: int) -> Image.Image:
    ramp = np.linspace(40, 200, width, dtype=np.uint8)
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[...] = ramp[None, :, None]
    pixels[..., 1] = 120
    return Image.fromarray(pixels)


def scenes(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """The example car photo moved across a background, one position per frame."""
    width, height = size
    photo = Image.open(CAR).convert("RGB")
    photo.thumbnail((width * 2 // 3, height * 2 // 3))
    frames = []
    for index in range(count):
        image = background(width, height)
        left = (width - photo.width) * index // max(1, count - 1)
        image.paste(photo, (left, (height - photo.height) // 2))
        frames.append(image)
    return frames


def make_clip(
    path: Path,
    count: int = 4,
    size: tuple[int, int] = (160, 120),
    fps: int = FPS,
    pts: list[int] | None = None,
    rotation: int | None = None,
    audio: str | None = None,
) -> list[Image.Image]:
    """Write a clip (codec from the suffix) and return its frames as encoded (decoded back)."""
    codec = {".webm": "libvpx-vp9", ".mp4": "libx264", ".mov": "libx264", ".dat": "libx264"}
    fmt = {".dat": "mp4"}.get(path.suffix)
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec[path.suffix], rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if pts is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = container.add_stream(audio, rate=48000)
    for index, image in enumerate(scenes(count, size)):
        frame = av.VideoFrame.from_image(image)
        frame.pts = index if pts is None else pts[index]
        if pts is not None:
            frame.time_base = Fraction(1, 1000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    if sound is not None:
        samples = int(48000 * count / fps)
        tone = np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000).astype(np.float32)
        step = 960
        for start in range(0, samples - step + 1, step):
            chunk = np.tile(tone[start : start + step], (2, 1))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = 48000
            frame.pts = start
            container.mux(sound.encode(frame))
        container.mux(sound.encode(None))
    container.close()
    return source_frames(path)


def source_frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            image = frame.to_image()
            turns = round((frame.rotation or 0) / 90) % 4
            frames.append(image.rotate(90 * turns, expand=True) if turns else image)
        return frames


def decode_clip(path: Path) -> tuple[list[np.ndarray], list[int], object]:
    """RGBA frames (VP9 through libvpx, which reads the alpha plane), pts, and the stream."""
    container = av.open(str(path))
    stream = container.streams.video[0]
    decoder = stream.codec_context
    if decoder.name == "vp9":
        decoder = av.CodecContext.create("libvpx-vp9", "r")
    frames, pts = [], []
    for packet in container.demux(stream):
        for frame in decoder.decode(packet):
            frames.append(frame.to_ndarray(format="rgba"))
            pts.append(frame.pts)
    info = (stream.codec_context.name, frame.format.name, Fraction(stream.average_rate))
    duration = container.duration / 1_000_000
    kinds = [s.type for s in container.streams]
    audio_codec = container.streams.audio[0].codec_context.name if container.streams.audio else None
    container.close()
    return frames, pts, (*info, duration, kinds, audio_codec)


def masks(remover, frames: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(remover.mask(frame), dtype=np.int16) for frame in frames]


@pytest.fixture(scope="module")
def clip(tmp_path_factory, u2netp_path):
    folder = tmp_path_factory.mktemp("clip")
    path = folder / "walk.webm"
    return path, make_clip(path, count=4)


@pytest.fixture(scope="module")
def expected(clip, u2netp_path):
    from rmcli import Remover

    return masks(Remover(model="u2netp"), clip[1])


def test_webm_output_has_every_frame_its_timing_and_a_real_alpha_plane(clip, expected, tmp_path):
    path, frames = clip
    done = rmcli("remove", str(path), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    written = tmp_path / "out" / "walk.webm"
    assert done.stdout.decode().split() == [str(written)]
    decoded, pts, (codec, pix_fmt, rate, duration, kinds, _) = decode_clip(written)
    assert (codec, pix_fmt, kinds) == ("vp9", "yuva420p", ["video"])
    assert len(decoded) == 4 and rate == FPS and duration == pytest.approx(4 / FPS, abs=0.01)
    assert pts == [0, 200, 400, 600]
    for rgba, mask in zip(decoded, expected, strict=True):
        alpha = rgba[..., 3].astype(np.int16)
        assert alpha.shape == mask.shape
        assert alpha.min() == 0 and alpha.max() == 255  # real transparency, not opaque
        assert np.abs(alpha - mask).mean() < 2.5  # VP9 is lossy; the mask's shape is kept


def test_png_frames_and_prores_alpha_equal_the_mask_of_each_frame(clip, expected, tmp_path):
    path, _ = clip
    out = tmp_path / "out"
    done = rmcli("remove", str(path), "-o", str(out), "--format", "png")
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (out / "walk").iterdir())
    assert names == ["00001.png", "00002.png", "00003.png", "00004.png"]
    for name, mask in zip(names, expected, strict=True):
        alpha = np.asarray(Image.open(out / "walk" / name).getchannel("A"), dtype=np.int16)
        assert np.array_equal(alpha, mask)
    done = rmcli("remove", str(path), "-o", str(out), "--format", "mov")
    assert done.returncode == 0, done.stderr
    decoded, _, (codec, pix_fmt, rate, _, _, _) = decode_clip(out / "walk.mov")
    assert codec == "prores" and pix_fmt.startswith("yuva444p") and rate == FPS
    for rgba, mask in zip(decoded, expected, strict=True):
        assert np.abs(rgba[..., 3].astype(np.int16) - mask).max() <= 1


def test_library_remover_map_writes_clips_too(clip, tmp_path, u2netp_path):
    from rmcli import Remover

    path, _ = clip
    results = list(Remover(model="u2netp", output_format="webp").map([path], tmp_path))
    assert [r.error for r in results] == [None]
    assert results[0].job.output == tmp_path / "walk.webp"
    with Image.open(tmp_path / "walk.webp") as image:
        assert image.n_frames == 4 and image.mode == "RGBA"


def test_animated_gif_gives_an_animated_gif_with_every_frame_and_duration(tmp_path, remover):
    frames = scenes(3, (96, 72))
    source = tmp_path / "anim.gif"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[100, 300, 200])
    done = rmcli("remove", str(source), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    with Image.open(source) as original, Image.open(tmp_path / "out" / "anim.gif") as out:
        assert out.n_frames == 3
        for index in range(3):
            original.seek(index)
            out.seek(index)
            assert out.info["duration"] == [100, 300, 200][index]
            mask = np.asarray(remover.mask(original.convert("RGBA")))
            alpha = np.asarray(out.convert("RGBA").getchannel("A"))
            assert np.array_equal(alpha > 0, mask >= 128)  # GIF: transparent or not


def test_background_colour_gives_an_h264_mp4_with_odd_sides_padded(tmp_path, u2netp_path):
    path = tmp_path / "odd.webm"
    make_clip(path, count=2, size=(97, 71))
    done = rmcli("remove", str(path), "-o", str(tmp_path), "--bgcolor", "0,255,0")
    assert done.returncode == 0, done.stderr
    decoded, _, (codec, pix_fmt, rate, _, _, _) = decode_clip(tmp_path / "odd.mp4")
    assert (codec, pix_fmt, rate) == ("h264", "yuv420p", FPS)
    assert decoded[0].shape[:2] == (72, 98) and len(decoded) == 2


def test_one_crop_box_for_the_whole_clip(clip, expected, tmp_path):
    path, _ = clip
    done = rmcli("remove", str(path), "-o", str(tmp_path), "--format", "png", "--crop")
    assert done.returncode == 0, done.stderr
    union = np.zeros_like(expected[0], dtype=bool)
    for mask in expected:
        union |= mask > 10
    rows, cols = np.nonzero(union)
    size = (cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min())
    sizes = {Image.open(p).size for p in (tmp_path / "walk").iterdir()}
    assert sizes == {size}


def test_rotation_variable_frame_rate_and_audio_are_kept(tmp_path, remover):
    path = tmp_path / "phone.mp4"
    stamps = [0, 100, 350, 400]
    frames = make_clip(path, count=4, pts=stamps, rotation=90, audio="aac")
    assert frames[0].size == (120, 160)  # upright as a player shows it
    done = rmcli("remove", str(path), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    decoded, pts, (_, _, _, _, kinds, audio) = decode_clip(tmp_path / "out" / "phone.webm")
    assert decoded[0].shape[:2] == (160, 120)
    assert pts == stamps
    assert kinds == ["video", "audio"] and audio == "opus"  # AAC cannot go into WebM
    expected = np.asarray(remover.mask(frames[2]), dtype=np.int16)
    assert np.abs(decoded[2][..., 3].astype(np.int16) - expected).mean() < 2.5


def test_a_video_named_like_nothing_known_is_found_by_probing(tmp_path, u2netp_path):
    path = tmp_path / "capture.dat"
    make_clip(path, count=2)
    done = rmcli("remove", str(path), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert len(decode_clip(tmp_path / "out" / "capture.webm")[0]) == 2


def test_rmcli_b_reads_raw_rgb24_frames_like_rembg_b(clip, expected, tmp_path):
    _, frames = clip
    raw = b"".join(frame.tobytes() for frame in frames)
    done = rmcli("b", "160", "120", "-o", str(tmp_path / "f" / "out-%05d.png"), stdin=raw)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == [f"out-{i:05d}.png" for i in range(4)]  # numbered from 0, as rembg does
    for name, mask in zip(names, expected, strict=True):
        alpha = np.asarray(Image.open(tmp_path / "f" / name).getchannel("A"), dtype=np.int16)
        assert np.array_equal(alpha, mask)
    done = rmcli("b", "160", "120", "--raw", stdin=raw + b"\0" * 10)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 4 * 160 * 120 * 4
    rgba = np.frombuffer(done.stdout, np.uint8).reshape(4, 120, 160, 4)
    assert np.array_equal(rgba[3, ..., 3], expected[3])
    assert "last 10 bytes on stdin are not a whole 160x120 RGB24 frame" in done.stderr.decode()


def test_truncated_clip_names_the_frame_writes_nothing_and_the_batch_goes_on(tmp_path, u2netp_path):
    whole = tmp_path / "whole.webm"
    make_clip(whole, count=12, size=(64, 48))
    data = whole.read_bytes()
    broken = tmp_path / "broken.webm"
    broken.write_bytes(data[: len(data) * 4 // 5])
    corrupt = tmp_path / "corrupt.mp4"
    make_clip(corrupt, count=12, size=(64, 48))
    data = bytearray(corrupt.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = bytes((b * 7 + 13) % 256 for b in data[middle : middle + 200])
    corrupt.write_bytes(bytes(data))
    photo = tmp_path / "photo.png"
    background(64, 48).save(photo)
    done = rmcli("remove", str(broken), str(corrupt), str(photo), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    errors = done.stderr.decode().splitlines()
    assert errors[0].startswith(f"{broken}: frame ") and "truncated" in errors[0], errors
    assert errors[1].startswith(f"{corrupt}: frame ") and " of 12: cannot decode: " in errors[1]
    assert errors[-1] == "1 written, 2 failed"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.png"]


def test_faults_are_one_line_each(tmp_path, u2netp_path):
    audio_only = tmp_path / "sound.webm"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("libopus", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 960), np.float32), "fltp", "stereo")
        frame.sample_rate, frame.pts = 48000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    empty = tmp_path / "empty.webm"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=5)
        stream.width, stream.height = 64, 48
        container.start_encoding()  # a header and no frame
    large = tmp_path / "large.webm"
    make_clip(large, count=1, size=(64, 48))
    still = tmp_path / "still.png"
    background(8, 8).save(still)
    done = rmcli(
        "remove", str(audio_only), str(empty), str(large), "-o", str(tmp_path / "out"),
        env={"RMCLI_MAX_PIXELS": "3000"},
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert lines[1].startswith(f"{empty}: cannot open video: ")  # a header without frames
    assert lines[:1] + lines[2:] == [
        f"{audio_only}: no video stream",
        f"{large}: frames of 64x48 = 3,072 pixels, over the limit of 3,000 set by max_pixels "
        "(RMCLI_MAX_PIXELS)",
        "0 written, 3 failed",
    ]
    done = rmcli("remove", str(still), "--format", "webm")
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        f"{still}: a still image cannot be written as webm (use png, webp or jpg)",
        "0 written, 1 failed",
    ]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_missing_pyav_gives_the_install_command(tmp_path, clip):
    code = (
        "import sys; sys.modules['av'] = None; from rmcli.cli import main; "
        f"sys.argv = ['rmcli', 'remove', {str(clip[0])!r}, '-o', {str(tmp_path)!r}]; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"rmcli: error: {clip[0]}: video needs PyAV: {pip_install('video')} (or pip install av)"
    )


def test_ctrl_c_mid_clip_leaves_no_file(tmp_path, u2netp_path):
    path = tmp_path / "long.webm"
    make_clip(path, count=200, size=(64, 48))  # long enough to be mid-clip on a fast machine
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", str(path), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and list(out.iterdir())):
        time.sleep(0.05)  # the temporary output appears once the clip has started
    started = [p.name for p in out.iterdir()] if out.exists() else []
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    what = f"seen before the signal: {started}\n{stderr}"
    assert process.returncode == 130, what
    assert f"{path}: interrupted at frame " in stderr, what
    assert list(out.iterdir()) == [], what


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64", reason="tgkill syscall number"
)
def test_ctrl_c_delivered_to_a_worker_thread_stops_the_clip(tmp_path, u2netp_path):
    """The kernel may give Ctrl-C to any thread of the process (an inference, decoding or
    encoding thread); it must stop the clip as promptly as when the main thread gets it."""
    import ctypes

    path = tmp_path / "long.webm"
    make_clip(path, count=200, size=(64, 48))  # about 40 s of work on 2 cores
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "rmcli", "remove", str(path), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and list(out.iterdir())):
        time.sleep(0.05)  # the temporary output appears once the clip has started
    time.sleep(0.5)
    threads = sorted(int(t) for t in os.listdir(f"/proc/{process.pid}/task"))
    worker = next(t for t in threads if t != process.pid)
    tgkill = 234  # x86_64: a signal to one thread of a process
    assert ctypes.CDLL(None).syscall(tgkill, process.pid, worker, signal.SIGINT) == 0
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"{path}: interrupted at frame " in stderr, stderr
    assert list(out.iterdir()) == [], stderr


def test_smoothing_reduces_flicker_on_still_areas_without_smearing_motion():
    from rmcli.video.smoothing import TemporalSmoother, flicker

    rng = np.random.default_rng(1)
    smooth = TemporalSmoother()
    raw, smoothed = [], []
    for index in range(20):
        mask = np.full((40, 40), 200, np.float32) + rng.normal(0, 6, (40, 40))
        mask[:, :index] = 0  # an edge moving 1 pixel a frame over the left half
        mask = np.clip(mask, 0, 255).astype(np.uint8)
        raw.append(mask)
        smoothed.append(np.asarray(smooth(Image.fromarray(mask))))
    still = slice(20, None)  # the right half: only noise changes there
    assert flicker(m[:, still] for m in smoothed) < 0.6 * flicker(m[:, still] for m in raw)
    for index in range(1, 20):  # the moving edge is exactly where the model put it
        assert (smoothed[index][:, :index] == 0).all()
        assert (smoothed[index][:, index:] > 150).all()


def test_frame_folder_replaces_an_existing_one_only_when_complete(clip, tmp_path, u2netp_path):
    path, _ = clip
    old = tmp_path / "walk"
    old.mkdir()
    (old / "stale.txt").write_text("old")
    env = {"RMCLI_OUTPUT_FORMAT": "png"}
    done = rmcli("remove", str(path), "-o", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in old.iterdir()) == [f"{i:05d}.png" for i in range(1, 5)]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
