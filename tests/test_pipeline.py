"""The pipelined local batch on the real u2netp: input order, bounded images in flight, the same
pixels as one image at a time, a clean stop, --stats, and the fast PNG writer."""

from __future__ import annotations

import io
import re
import threading
from contextlib import contextmanager

import numpy as np
import pytest
from helpers import EXAMPLES, alpha_of, rmcli
from PIL import Image

from rmcli import Remover
from rmcli.contracts.clock import STAGES, untimed
from rmcli.contracts.output import OutputOptions
from rmcli.engine.runner import run_local
from rmcli.images.inputs import plan_jobs
from rmcli.images.png import write_png


def photo_batch(folder, count: int, first_size=(1200, 800)) -> list[str]:
    """``count`` JPEGs cut from a real photo, the first one much larger than the rest."""
    photo = Image.open(EXAMPLES / "animal-1.jpg").convert("RGB")
    paths = []
    for index in range(count):
        size = first_size if index == 0 else (96 + 8 * index, 80)
        crop = photo.crop((index * 20, index * 10, index * 20 + 400, index * 10 + 300))
        path = folder / f"in-{index:02d}.jpg"
        crop.resize(size).save(path, quality=90)
        paths.append(str(path))
    return paths


class InFlight:
    """A stage clock that records how many images are between decode and end of encode."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.images = self.most_images = 0
        self.inferring = self.most_inferring = 0
        self.stages: list[str] = []

    @contextmanager
    def __call__(self, stage: str):
        with self.lock:
            self.stages.append(stage)
            if stage == "decode":
                self.images += 1
                self.most_images = max(self.most_images, self.images)
            if stage == "inference":
                self.inferring += 1
                self.most_inferring = max(self.most_inferring, self.inferring)
        try:
            yield
        finally:
            with self.lock:
                if stage == "inference":
                    self.inferring -= 1
                if stage == "encode":
                    self.images -= 1


def run(paths, out, inflight: int, clock=None, stop=None):
    remover = Remover(inflight=inflight)
    jobs = plan_jobs(paths, out, "png")
    return jobs, list(run_local(remover, jobs, OutputOptions(), stop, clock or untimed))


@pytest.mark.parametrize("inflight", [2, 3])
def test_images_in_flight_are_bounded_and_inference_runs_one_at_a_time(
    u2netp_path, tmp_path, inflight
):
    paths = photo_batch(tmp_path, 6)
    clock = InFlight()
    jobs, results = run(paths, tmp_path / "out", inflight, clock)
    assert [r.job for r in results] == jobs and not any(r.error for r in results)
    assert clock.stages.count("encode") == 6
    assert 2 <= clock.most_images <= inflight  # overlapping, never more than asked
    assert clock.most_inferring == 1


def test_results_and_cli_lines_come_in_input_order(u2netp_path, tmp_path):
    paths = photo_batch(tmp_path, 6, first_size=(2400, 1600))  # the slow one first
    broken = tmp_path / "in-03.jpg"
    broken.write_bytes(b"not an image")
    out = tmp_path / "out"
    done = rmcli("remove", *paths, "-o", str(out), "--inflight", "3")
    assert done.returncode == 1
    expected = [str(out / f"in-{i:02d}.png") for i in range(6) if i != 3]
    assert done.stdout.decode().split() == expected
    assert f"{broken}: not an image" in done.stderr.decode()


def test_pipelined_outputs_have_the_same_pixels_as_one_at_a_time(u2netp_path, tmp_path):
    paths = photo_batch(tmp_path, 5)
    run(paths, tmp_path / "one", 1)
    run(paths, tmp_path / "three", 3)
    for index in range(5):
        one = Image.open(tmp_path / "one" / f"in-{index:02d}.png")
        three = Image.open(tmp_path / "three" / f"in-{index:02d}.png")
        assert one.mode == three.mode == "RGBA"
        assert one.tobytes() == three.tobytes()


def test_stop_lets_started_images_finish_and_starts_no_more(u2netp_path, tmp_path):
    paths = photo_batch(tmp_path, 8)
    stop = threading.Event()
    clock = InFlight()

    @contextmanager
    def stop_at_first_encode(stage):
        if stage == "encode":
            stop.set()
        with clock(stage):
            yield

    jobs, results = run(paths, tmp_path / "out", 2, stop_at_first_encode, stop)
    assert 1 <= len(results) < 8
    assert [r.job for r in results] == jobs[: len(results)]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [f"in-{i:02d}.png" for i in range(len(results))]  # complete, no temp files
    assert clock.stages.count("decode") == clock.stages.count("encode") == len(results)


def test_stats_report_every_stage_wall_throughput_and_peak_memory(u2netp_path, tmp_path):
    paths = photo_batch(tmp_path, 3)
    done = rmcli("remove", *paths, "-o", str(tmp_path / "out"), "--stats")
    assert done.returncode == 0, done.stderr.decode()
    report = done.stderr.decode()
    assert "stats: 3 image(s), 0 failed" in report
    seconds = {
        stage: float(re.search(rf"^\s+{stage}\s+([\d.]+) s", report, re.M).group(1))
        for stage in (*STAGES, "wall")
    }
    assert all(seconds[stage] > 0 for stage in STAGES)
    assert seconds["inference"] < seconds["wall"]  # one inference at a time
    rate = float(re.search(r"throughput\s+([\d.]+) images/s", report).group(1))
    assert rate == pytest.approx(3 / seconds["wall"], rel=0.05, abs=0.01)
    peak = float(re.search(r"peak memory\s+([\d.]+) MiB", report).group(1))
    assert 50 < peak < 4096


def test_large_images_keep_mask_parity_with_rembg_preprocessing(u2netp_path):
    """Images >= 8x the model input are box-reduced before LANCZOS; the mask barely moves."""
    source = Image.open(EXAMPLES / "girl-1.jpg").convert("RGB")
    big = source.resize((3000, 1995), Image.Resampling.BICUBIC)
    remover = Remover()
    model = remover.model
    small = np.asarray(big.resize(model.input_size, Image.Resampling.LANCZOS))  # as rembg
    scaled = small / small.max()
    tensor = ((scaled - np.array(model.mean)) / np.array(model.std)).transpose(2, 0, 1)[None]
    exact = model.to_mask(remover.session.run(tensor.astype(np.float32)), big.size)
    ours = remover.mask(big)
    assert np.abs(alpha_of(ours) - alpha_of(exact)).mean() <= 0.5


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "LA", "L"])
@pytest.mark.parametrize("threads", [1, 3])
def test_png_writer_is_lossless_in_any_strip_count(mode, threads):
    rng = np.random.default_rng(7)
    photo = Image.open(EXAMPLES / "car-1.jpg").convert("RGBA")
    noise = Image.fromarray(rng.integers(0, 256, (360, 480), np.uint8), "L")
    photo.putalpha(noise)
    image = photo.convert(mode)
    for level in (0, 1, 9):
        buffer = io.BytesIO()
        write_png(image, buffer, level, threads)
        buffer.seek(0)
        back = Image.open(buffer)
        back.load()  # Pillow checks every chunk's CRC
        assert back.format == "PNG" and back.mode == mode and back.size == image.size
        assert back.tobytes() == image.tobytes()


def test_png_writer_handles_tiny_images():
    for size in [(1, 1), (3, 1), (1, 200)]:
        image = Image.new("RGBA", size, (10, 20, 30, 40))
        buffer = io.BytesIO()
        write_png(image, buffer, 1, threads=4)
        buffer.seek(0)
        assert Image.open(buffer).tobytes() == image.tobytes()


def test_png_writer_keeps_icc_profile_and_exif():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "rmcli-camera"  # Make
    image = Image.new("RGBA", (40, 30), (200, 100, 50, 128))
    buffer = io.BytesIO()
    write_png(image, buffer, 1, 2, icc_profile=icc, exif=exif.tobytes())
    buffer.seek(0)
    back = Image.open(buffer)
    back.load()
    assert back.info["icc_profile"] == icc
    assert back.getexif()[0x010F] == "rmcli-camera"
    assert back.tobytes() == image.tobytes()
