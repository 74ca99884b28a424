"""Seeded, bounded fuzzing of the per-input path: every mutated file is written or refused.

Valid JPEG, PNG, WebP, GIF and TIFF files, with EXIF, ICC and XMP blocks, are mutated (bytes
flipped, cut short, header fields changed, metadata blocks replaced by mutated copies of
themselves) and each one is run through the same per-input function the batch runner uses.
The promise held: every input gives either a whole output file or one ``PATH: reason`` line
(an :class:`~rmcli.errors.InputError`), never any other exception.

The model is the example plugin's tiny network (plumbing, not masks, is under test), so the
run stays well under a minute on two busy cores. Hypothesis runs derandomized: the same cases
every time.
"""

from __future__ import annotations

import functools
import io
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import rmcli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from rmcli import ComposeOptions, InputError, Job, OutputOptions
from rmcli.engine.runner import process

# Pillow warns about what it skips in damaged files; the outcome is what is under test
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL", "ignore::RuntimeWarning:PIL")

FUZZ_CASES = 400  # Hypothesis examples; each is one input through the per-input path
FORMATS = ["jpeg", "png", "webp", "gif", "tiff"]
XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    b'<?xpacket end="w"?>'
)


def _picture(width: int = 48, height: int = 36) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 5 % 256, y * 7 % 256, (x + y) % 256], -1).astype(np.uint8)
    rgb[height // 4 : height * 3 // 4, width // 4 : width * 3 // 4] = (20, 30, 40)
    return Image.fromarray(rgb, "RGB")


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    exif[0x010F] = "FuzzCam"
    exif[0x0131] = "rmcli fuzz"
    exif[0x8769] = {0x9003: "2026:12:02 10:00:00", 0x920A: (35, 1)}  # Exif IFD
    return exif


@functools.cache
def _icc() -> bytes:
    """An sRGB profile, made once (its header holds a creation time)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def seed_file(fmt: str, exif: bytes | None, icc: bytes | None, xmp: bytes | None) -> bytes:
    """A small valid file of ``fmt`` carrying the given metadata blocks (where it can)."""
    image = _picture()
    extra: dict = {}
    if exif is not None:
        extra["exif"] = exif
    if icc is not None:
        extra["icc_profile"] = icc
    if xmp is not None and fmt in ("jpeg", "png", "webp", "tiff"):
        extra["xmp"] = xmp
    buffer = io.BytesIO()
    if fmt == "gif":
        frames = [image.convert("P"), image.rotate(90).convert("P")]
        frames[0].save(
            buffer, "GIF", save_all=True, append_images=frames[1:], transparency=0, **extra
        )
    elif fmt == "png":
        image.convert("RGBA").save(buffer, "PNG", **extra)
    elif fmt == "tiff":
        image.save(buffer, "TIFF", **{k: v for k, v in extra.items() if k != "xmp"})
    else:
        image.save(buffer, fmt.upper(), **extra)
    return buffer.getvalue()


def _flip(data: bytes, positions: list[int], values: list[int]) -> bytes:
    out = bytearray(data)
    for position, value in zip(positions, values, strict=False):
        out[position % len(out)] = value
    return bytes(out)


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk CRC, so a mutated chunk body reaches the decoder."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length:
            out += data[pos:]
            break
        out += data[pos : pos + 8 + length] + struct.pack(">I", zlib.crc32(kind + body))
        pos += 12 + length
    return bytes(out)


@st.composite
def mutated_inputs(draw) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(FORMATS))
    exif_bytes = _exif().tobytes()
    icc_bytes = _icc()
    kind = draw(st.sampled_from(["bytes", "truncate", "header", "exif", "bigexif", "icc", "xmp"]))
    exif = exif_bytes if draw(st.booleans()) else None
    icc = icc_bytes if draw(st.booleans()) else None
    xmp = XMP if draw(st.booleans()) else None
    mutate = st.lists(st.integers(0, 1 << 20), min_size=1, max_size=8)
    values = st.lists(st.integers(0, 255), min_size=1, max_size=8)
    if kind == "exif":  # a valid container around a damaged EXIF block
        exif = _flip(exif_bytes, [p % len(exif_bytes) for p in draw(mutate)], draw(values))
        if draw(st.booleans()):
            exif = exif[: draw(st.integers(0, len(exif)))]
        if draw(st.booleans()):
            exif = exif * draw(st.integers(2, 700))  # up to ~100 KB: over JPEG's 64 KB
    elif kind == "bigexif":  # valid, but more than a JPEG can hold
        big = _exif()
        big[0x927C] = bytes(draw(st.integers(60_000, 90_000)))  # MakerNote
        exif = big.tobytes()
    elif kind == "icc":
        icc = _flip(icc_bytes, draw(mutate), draw(values))
        if draw(st.booleans()):
            icc = icc[: draw(st.integers(0, len(icc)))]
    elif kind == "xmp":
        xmp = draw(st.binary(min_size=0, max_size=300))
    try:
        data = seed_file(fmt, exif, icc, xmp)
    except Exception:  # Pillow's TIFF writer parses EXIF itself: damage the file instead
        data = seed_file(fmt, exif_bytes, icc_bytes, xmp)
        kind = "bytes"
    if kind == "bytes":
        start = draw(st.integers(0, len(data) - 1))
        data = _flip(data, [start + p % 64 for p in draw(mutate)], draw(values))
    elif kind == "truncate":
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif kind == "header":  # the first 64 bytes hold every format's size and mode fields
        data = _flip(data, [p % 64 for p in draw(mutate)], draw(values))
    if fmt == "png":
        data = _fix_png_crcs(data)
    return f"{kind}-{fmt}", data


@pytest.fixture(scope="module")
def tiny_remover():
    from rmcli import Remover

    return Remover(model="studio-white")


def check_one(remover, folder: Path, name: str, data: bytes, fmt: str) -> str:
    """Run one input; 'written' or 'refused', or fail the test with what went wrong."""
    from rmcli.video import clip as video

    source = folder / f"{name}.img"
    source.write_bytes(data)
    options = OutputOptions(fmt=fmt, compose=ComposeOptions())
    # planned as the runner plans it: an input that probes as a clip gets its clip's output
    (job,) = video.plan([Job(str(source), source, folder / f"{name}.out.{fmt}")],
                        remover.settings, options)  # fmt: skip
    output = Path(job.output)
    for old in (output, *output.parent.glob(f"{output.stem}.*")):  # a case before this one
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink(missing_ok=True)
    try:
        process(remover, job, options)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(f"{source}: ") and "\n" not in message, message
        assert not output.exists()
        return "refused"
    if output.is_dir():  # a clip written as a folder of frames
        frames = sorted(output.iterdir())
        assert frames, output
        output = frames[0]
    if output.suffix in (".png", ".webp", ".jpg", ".gif"):
        with Image.open(output) as written:
            written.load()  # whole, decodable
            assert written.width > 0 and written.height > 0
    else:  # a video clip: complete files only ever get their final name
        assert output.stat().st_size > 0, output
    return "written"


def test_every_mutated_input_is_written_whole_or_refused_in_one_line(tiny_remover, tmp_path):
    outcomes: list[str] = []

    @settings(
        max_examples=FUZZ_CASES,
        derandomize=True,  # seeded: the same cases on every run
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=mutated_inputs(), fmt=st.sampled_from(["png", "webp", "jpg"]))
    def one(case: tuple[str, bytes], fmt: str) -> None:
        name, data = case
        outcomes.append(check_one(tiny_remover, tmp_path, name, data, fmt))

    one()
    # not vacuous: both outcomes happen, and every case ran
    assert len(outcomes) == FUZZ_CASES
    assert outcomes.count("written") > FUZZ_CASES // 4, outcomes.count("written")
    assert outcomes.count("refused") > FUZZ_CASES // 10, outcomes.count("refused")


BATCH_SIZE = 40


@pytest.mark.slow  # a subprocess
def test_a_batch_of_mutated_inputs_ends_with_a_summary_never_a_traceback(tmp_path):
    """The same mutations through the command line: exit 0 or 1, one line per refused input."""

    @settings(
        max_examples=3,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cases=st.lists(mutated_inputs(), min_size=BATCH_SIZE, max_size=BATCH_SIZE))
    def batch(cases: list[tuple[str, bytes]]) -> None:
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        names = []
        for index, (name, data) in enumerate(cases):
            suffix = {"jpeg": ".jpg"}.get(name.split("-")[-1], "." + name.split("-")[-1])
            names.append(f"{index:02d}-{name}{suffix}")
            (folder / "in").mkdir(exist_ok=True)
            (folder / "in" / names[-1]).write_bytes(data)
        done = rmcli(
            "remove", "in", "-o", "out", "--model", "studio-white", "--format", "webp",
            cwd=folder,
        )  # fmt: skip
        stderr = done.stderr.decode()
        assert done.returncode in (0, 1), stderr
        assert "Traceback" not in stderr
        lines = stderr.splitlines()
        written = done.stdout.decode().splitlines()
        refused = [ln for ln in lines[:-1] if not ln.startswith("rmcli: ")]
        assert len(written) + len(refused) == BATCH_SIZE, stderr
        assert lines[-1] == f"{len(written)} written, {len(refused)} failed"
        for name in names:
            output = f"out/{Path(name).stem}.webp"
            mine = [ln for ln in refused if ln.startswith(f"in/{name}: ")]
            if output in written:
                assert not mine
                with Image.open(folder / output) as image:
                    image.load()
            else:
                assert len(mine) == 1, (name, stderr)
                assert not (folder / output).exists()

    batch()
