"""Opening one input safely: a clear reason for every unusable file, bounded memory, upright pixels.

Checks run cheapest first: the file itself (missing, a folder, a FIFO, empty), then the header
(size against ``max_pixels`` and Pillow's decompression-bomb limit, pixel mode), and only then
the pixels are decoded. Pillow's ``LOAD_TRUNCATED_IMAGES`` is never turned on: a truncated file
is an error, not a silently grey image.
"""

from __future__ import annotations

import io
import logging
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.errors import InputError, TooLargeError

if TYPE_CHECKING:
    from PIL import Image

# Modes the cut-out handles as they are (after Pillow's own conversion to RGB or RGBA).
DIRECT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
UNSUPPORTED = {
    "F": "32-bit floating-point pixels",
    "LAB": "CIELab colour",
    "HSV": "HSV colour",
}
MULTI_IMAGE_FORMATS_WITHOUT_NOTICE = {"MPO"}  # camera JPEGs with a depth map or preview

log = logging.getLogger(__name__)


def load_checked(
    source: Any,
    label: str,
    max_pixels: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> Image.Image:
    """Decode ``source`` (path, bytes, PIL image or ndarray) into an upright image cutout() takes.

    ``max_pixels`` (None: Pillow's ``MAX_IMAGE_PIXELS``) is checked on the header, before any
    pixel is decoded. ``notice`` receives informational lines such as "only the first frame of
    an animation is used". Every failure is an :class:`InputError` ``"LABEL: reason"``.
    """
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    opened_here = False
    with _reasons(label):
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes | bytearray):
            image = _open_bytes(source, label)
            opened_here = True
        elif isinstance(source, str | Path):
            _check_file(Path(source), label)
            image = Image.open(source)
            opened_here = True
        elif hasattr(source, "__array_interface__"):
            image = Image.fromarray(source)
        else:
            raise InputError(f"{label}: unsupported image source {type(source).__name__}")
        try:
            _check_header(image, label, limit, max_pixels is not None)
            frames = _frame_count(image)
            image.load()
            upright = _upright(image, label, notice)
        finally:
            if opened_here:
                image.close()
    if frames > 1 and notice is not None:
        notice(f"{label}: has {frames} frames; only the first is used")
    return _normalised(upright, label)


def check_header(data: bytes, label: str, max_pixels: int) -> tuple[int, int]:
    """The size of the image in ``data`` from its header alone (no pixel decoded), with the
    checks :func:`load_checked` makes first: an :class:`InputError` for what is not a usable
    image, a :class:`TooLargeError` for one over ``max_pixels`` or Pillow's bomb limit."""
    with _reasons(label):
        with _open_bytes(data, label) as image:
            _check_header(image, label, max_pixels, True)
            return image.size


def _open_bytes(data: bytes | bytearray, label: str) -> Image.Image:
    from PIL import Image

    if not data:
        raise InputError(f"{label}: empty input")
    return Image.open(io.BytesIO(data))


@contextmanager
def _reasons(label: str) -> Iterator[None]:
    """Every failure to open or decode ``label`` as one :class:`InputError` line."""
    from PIL import Image

    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except Image.DecompressionBombError as exc:
        detail = str(exc).split(",")[0].replace("Image size", "size")
        raise TooLargeError(
            f"{label}: refused as a possible decompression bomb: {detail}"
        ) from None
    except Image.UnidentifiedImageError:
        raise InputError(f"{label}: not an image (or a format Pillow cannot read)") from None
    except MemoryError:
        raise InputError(f"{label}: not enough memory to decode it") from None
    except (OSError, ValueError, TypeError, SyntaxError, EOFError, IndexError) as exc:
        raise InputError(f"{label}: cannot decode image: {exc}") from None


# EXIF orientation -> the transposition that makes the image upright (as ImageOps does).
_ORIENTATION_FIX = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def _upright(image: Image.Image, label: str, notice: Callable[[str], None] | None) -> Image.Image:
    """A copy of ``image`` turned upright by its EXIF orientation.

    EXIF comes from the file and may be damaged: when Pillow cannot parse or rewrite it, the
    orientation is still applied if it can be read, and the EXIF block is dropped with a
    ``notice`` (the pixels are fine; only the metadata is lost).
    """
    from PIL import Image, ImageOps

    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # any parser failure on untrusted bytes
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # not even the orientation can be read
        orientation = 1
    method = _ORIENTATION_FIX.get(orientation)
    upright = image.transpose(getattr(Image.Transpose, method)) if method else image.copy()
    upright.info = {k: v for k, v in image.info.items() if k != "exif"}
    (notice or log.warning)(f"{label}: broken EXIF metadata dropped ({reason})")
    return upright


def quiet_pillow_warnings() -> None:
    """Keep Pillow's warnings (possible bomb, corrupt EXIF...) off stderr, process-wide.

    The command line calls it once: its checks already report those cases as one line per
    file. Done once with a filter rather than ``catch_warnings`` around each decode, which is
    not thread-safe and decoding runs in threads. Library users keep Pillow's warnings.
    """
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


def _check_file(path: Path, label: str) -> None:
    """Refuse what is not a readable, non-empty regular file, without opening it.

    A FIFO or device named like an image would block or never end when read.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        reason = "broken symbolic link" if path.is_symlink() else "no such file"
        raise InputError(f"{label}: {reason}") from None
    except PermissionError:
        raise InputError(f"{label}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{label}: is a folder")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a device or socket"
        raise InputError(f"{label}: not a regular file ({kind})")
    if info.st_size == 0:
        raise InputError(f"{label}: empty file")


def _check_header(image: Image.Image, label: str, limit: int, from_setting: bool) -> None:
    """Size and mode, known from the header alone: refuse before decoding a single pixel."""
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InputError(f"{label}: image has no pixels ({width}x{height})")
    if width * height > limit:
        where = "max_pixels (RMCLI_MAX_PIXELS)" if from_setting else "PIL.Image.MAX_IMAGE_PIXELS"
        raise TooLargeError(
            f"{label}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,} set by {where}"
        )
    if image.mode in UNSUPPORTED:
        raise InputError(
            f"{label}: unsupported image mode {image.mode} ({UNSUPPORTED[image.mode]}); "
            "convert it to RGB first"
        )
    if image.mode not in DIRECT_MODES | SIXTEEN_BIT_MODES | {"I"}:
        raise InputError(f"{label}: unsupported image mode {image.mode}")


def _frame_count(image: Image.Image) -> int:
    if image.format in MULTI_IMAGE_FORMATS_WITHOUT_NOTICE or not getattr(
        image, "is_animated", False
    ):
        return 1
    return int(getattr(image, "n_frames", 1))


def _normalised(image: Image.Image, label: str) -> Image.Image:
    """16-bit grey scaled (not clipped, as Pillow's convert does) to 8-bit; other modes as-is."""
    if image.mode in DIRECT_MODES:
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        image = image.convert("I")
    low, high = image.getextrema()
    if low < 0 or high > 65535:
        raise InputError(
            f"{label}: unsupported image mode I (32-bit integer pixels beyond 16 bits)"
        )
    return image.point(lambda value: value / 257).convert("L")
