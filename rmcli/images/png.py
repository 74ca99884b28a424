"""A fast, lossless PNG writer: one fixed filter and the image split into strips compressed in
parallel threads (zlib releases the GIL), joined into one standard zlib stream.

Why not Pillow's PNG encoder: it tries five filters on every row (adaptive filtering), which
costs about half of its time, and it compresses on one thread. With the "Up" filter on every
row, photos with a cut-out alpha channel come out about 7% smaller than Pillow's at the same
zlib level, in about half the CPU time, and several strips use several cores. Any PNG reader
decodes the result to the same pixels. Modes other than L, LA, RGB and RGBA go to Pillow.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

COLOUR_TYPES = {"L": (0, 1), "LA": (4, 2), "RGB": (2, 3), "RGBA": (6, 4)}  # type, bytes/pixel
SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2
BLOCK_BYTES = 1 << 21  # rows are filtered and compressed in blocks of about 2 MB
ADLER_BASE = 65521


def supports(image: Image.Image) -> bool:
    """Whether :func:`write_png` writes this image itself (else use Pillow)."""
    return image.mode in COLOUR_TYPES


def write_png(
    image: Image.Image,
    out: BinaryIO,
    level: int = 1,
    threads: int = 1,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> None:
    """Write ``image`` (mode L, LA, RGB or RGBA) to ``out`` as PNG at zlib ``level`` 0-9.

    ``threads`` horizontal strips are filtered and compressed at the same time. An ICC
    profile and EXIF data are written as iCCP and eXIf chunks, as Pillow writes them.
    """
    colour_type, channels = COLOUR_TYPES[image.mode]
    width, height = image.size
    strips = max(1, min(threads, height // 64 or 1))
    bounds = [height * i // strips for i in range(strips + 1)]
    jobs = [(image, bounds[i], bounds[i + 1], level, i == strips - 1) for i in range(strips)]
    if strips == 1:
        parts = [_compress_rows(*jobs[0])]
    else:
        with ThreadPoolExecutor(strips, thread_name_prefix="rmcli-png") as pool:
            parts = list(pool.map(lambda job: _compress_rows(*job), jobs))
    checksum = 1
    for _, adler, length in parts:
        checksum = _adler32_combine(checksum, adler, length)
    out.write(SIGNATURE)
    _chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0))
    if icc_profile:
        _chunk(out, b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile))
    if exif:
        _chunk(out, b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
    _chunk(out, b"IDAT", b"\x78\x01")  # zlib header; the stream runs on across IDAT chunks
    for blocks, _, _ in parts:
        for block in blocks:
            _chunk(out, b"IDAT", block)
    _chunk(out, b"IDAT", struct.pack(">I", checksum))
    _chunk(out, b"IEND", b"")


def _compress_rows(
    image: Image.Image, top: int, bottom: int, level: int, last: bool
) -> tuple[list[bytes], int, int]:
    """Up-filter and raw-deflate rows ``top:bottom``: (compressed blocks, adler32, length)."""
    import numpy as np

    width = image.size[0]
    row_bytes = width * COLOUR_TYPES[image.mode][1]
    rows_per_block = max(1, BLOCK_BYTES // (row_bytes + 1))
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    blocks: list[bytes] = []
    adler, length = 1, 0
    previous = _rows(image, top - 1, top, row_bytes)[0] if top > 0 else None
    for start in range(top, bottom, rows_per_block):
        end = min(bottom, start + rows_per_block)
        rows = _rows(image, start, end, row_bytes)
        filtered = np.empty((end - start, row_bytes + 1), np.uint8)
        filtered[:, 0] = FILTER_UP
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        if previous is None:
            filtered[0, 1:] = rows[0]
        else:
            np.subtract(rows[0], previous, out=filtered[0, 1:])
        previous = rows[-1]
        data = filtered.data
        adler = zlib.adler32(data, adler)
        length += filtered.size
        blocks.append(compressor.compress(data))
    blocks.append(compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH))
    return [b for b in blocks if b], adler, length


def _rows(image: Image.Image, top: int, bottom: int, row_bytes: int):
    import numpy as np

    raw = image.crop((0, top, image.size[0], bottom)).tobytes()
    return np.frombuffer(raw, np.uint8).reshape(bottom - top, row_bytes)


def _chunk(out: BinaryIO, kind: bytes, data: bytes) -> None:
    out.write(struct.pack(">I", len(data)) + kind)
    out.write(data)
    out.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _adler32_combine(first: int, second: int, second_length: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    remainder = second_length % ADLER_BASE
    sum1 = first & 0xFFFF
    sum2 = (remainder * sum1) % ADLER_BASE
    sum1 = (sum1 + (second & 0xFFFF) + ADLER_BASE - 1) % ADLER_BASE
    sum2 = (sum2 + (first >> 16) + (second >> 16) + ADLER_BASE - remainder) % ADLER_BASE
    return sum1 | (sum2 << 16)
