"""Generated inputs for fault tests: every kind of bad file, and valid files that are odd."""

from __future__ import annotations

import ctypes
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but that holds no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth RGB picture with an object in the middle (something for the model to find)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), np.full_like(x, 90)], -1)
    inside = (abs(x - width / 2) < width / 4) & (abs(y - height / 2) < height / 4)
    base[inside] = rng.integers(0, 255, 3)
    return Image.fromarray(base.astype(np.uint8), "RGB")


def drop_root_file_override() -> None:
    """preexec_fn: as root, give up CAP_DAC_OVERRIDE so that chmod 000 really means unreadable."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def build_valid(folder: Path) -> dict[str, dict]:
    """Odd but valid inputs; each maps to what its output must look like."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, dict] = {}

    photo(64, 48).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    expect["cmyk.jpg"] = {"size": (64, 48)}

    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16.png")
    expect["grey16.png"] = {"size": (64, 32), "grey16": ramp}

    palette = photo(40, 30).quantize(16)
    pixels = np.asarray(palette).copy()
    pixels[:, :8] = 15  # left strip uses the transparent index
    palette = Image.fromarray(pixels, "P")
    palette.putpalette(photo(40, 30).quantize(16).getpalette())
    palette.save(folder / "palette-transparent.png", transparency=15)
    expect["palette-transparent.png"] = {"size": (40, 30), "transparent_cols": 8}

    grey = np.full((30, 40), 128, np.uint8)
    alpha = np.full((30, 40), 255, np.uint8)
    alpha[:, :8] = 0
    Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]).save(
        folder / "grey-alpha.png"
    )
    expect["grey-alpha.png"] = {"size": (40, 30), "transparent_cols": 8}

    # Stored 80 wide x 40 high, red on the left; EXIF orientation 6 = rotate 90° clockwise to
    # view: upright it is 40 x 80 with red on top.
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (220, 0, 0)
    stored[:, 40:] = (0, 0, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "exif-rotated.jpg", exif=exif.tobytes(), quality=95)
    expect["exif-rotated.jpg"] = {"size": (40, 80), "red_on_top": True}

    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "blue", "green")]
    # a multi-page TIFF: its first page is used (animated GIF/WebP are clips: test_video.py)
    frames[0].save(folder / "pages.tif", save_all=True, append_images=frames[1:])
    expect["pages.tif"] = {"size": (32, 24), "first_frame_red": True, "frames": 3}

    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "a camera maker name, cut short below"
    Image.new("RGB", (30, 20), "red").save(folder / "bad-exif.jpg", exif=exif.tobytes()[:-12])
    expect["bad-exif.jpg"] = {"size": (30, 20)}  # unreadable EXIF: as stored, no Pillow warning

    photo(1, 1).save(folder / "one-pixel.png")
    expect["one-pixel.png"] = {"size": (1, 1)}

    photo(8000, 16).save(folder / "wide.png")
    expect["wide.png"] = {"size": (8000, 16)}

    photo(50, 40, seed=2).save(folder / "name with spaces é ü 写真.jpg")
    expect["name with spaces é ü 写真.jpg"] = {"size": (50, 40)}
    return expect


def build_invalid(folder: Path, max_pixels: int) -> dict[str, str]:
    """Unusable inputs in ``folder``; each maps to a phrase its single error line must hold."""
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    os.mkfifo(folder / "fifo.jpg")
    expect["fifo.jpg"] = "not a regular file (a FIFO)"

    locked = folder / "locked.png"
    photo(20, 20).save(locked)
    locked.chmod(0)
    expect["locked.png"] = "permission denied"

    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "empty file"

    buffer = io.BytesIO()
    photo(120, 90).save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    expect["truncated.jpg"] = "truncated"

    (folder / "text.jpg").write_text("this is not a picture\n")
    expect["text.jpg"] = "not an image"

    (folder / "bomb.png").write_bytes(png_header_only(20000, 20000))
    expect["bomb.png"] = "decompression bomb"

    side = int(max_pixels**0.5) + 10
    photo(side, side).save(folder / "too-big.png")
    expect["too-big.png"] = "max_pixels"

    Image.fromarray(np.full((10, 10), 0.5, np.float32)).save(folder / "float.tif")
    expect["float.tif"] = "unsupported image mode F"

    (folder / "dangling.png").symlink_to(folder / "gone.png")
    expect["dangling.png"] = "broken symbolic link"
    return expect
