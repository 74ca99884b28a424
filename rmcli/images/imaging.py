"""Image input and output: opening any source upright, cut-outs with straight alpha, encoding."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.atomic import atomic_path

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# read by rmcli.video (PyAV); folders include them only when PyAV is installed
VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ogv", ".flv",
    ".wmv", ".ts", ".mts", ".3gp",
}  # fmt: skip


def input_suffixes() -> set[str]:
    """Suffixes picked up in folders: images, and videos when PyAV is there to read them."""
    import importlib.util

    if importlib.util.find_spec("av") is None:
        return IMAGE_SUFFIXES
    return IMAGE_SUFFIXES | VIDEO_SUFFIXES


# Largest side each encoder accepts (libwebp: 16383; libjpeg: 65500; PNG: 2^31 - 1).
MAX_SIDE = {"png": 2**31 - 1, "webp": 16383, "jpg": 65500}
FORMAT_NAME = {"png": "PNG", "webp": "WebP", "jpg": "JPEG"}


def encodable(size: tuple[int, int], fmt: str) -> str | None:
    """None when ``fmt`` can hold an image of ``size``, else the reason (for a ``PATH:`` line)."""
    limit = MAX_SIDE.get(fmt)
    if limit is None or max(size) <= limit:
        return None
    width, height = size
    return (
        f"{width}x{height} is too large for {FORMAT_NAME[fmt]} (at most {limit:,} pixels per "
        "side); use --format png"
    )


ImageSource = Any  # str | Path | bytes | PIL.Image.Image | numpy.ndarray


def load_image(
    source: ImageSource,
    name: str | None = None,
    max_pixels: int | None = None,
    notice: Callable[[str], None] | None = None,
) -> Image.Image:
    """Open ``source`` (path, bytes, PIL image or ndarray), fully decoded and EXIF-upright.

    Failures raise :class:`InputError` whose message starts with ``name`` (or the path);
    images over ``max_pixels`` are refused from their header (see :mod:`rmcli.images.decoding`).
    """
    from rmcli.images.decoding import load_checked
    from rmcli.images.storage import is_url, read_bytes

    label = name or (str(source) if isinstance(source, str | Path) else "<image>")
    if is_url(source):
        source = read_bytes(source, label)
    return load_checked(source, label, max_pixels, notice)


def has_alpha(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info


def cutout(
    image: Image.Image, mask: Image.Image, premultiplied: bool = False, in_place: bool = False
) -> Image.Image:
    """RGBA with straight colour; alpha = mask (times any source alpha).

    ``premultiplied=True`` gives rembg's byte-identical cut-out (colour scaled by alpha).
    ``in_place=True`` attaches the mask to ``image`` itself when it is RGB or RGBA (no copy;
    Pillow stores RGB with room for alpha), for callers that own the image.
    """
    from PIL import Image, ImageChops

    if premultiplied:
        source = image if image.mode == "RGBA" else image.convert("RGBA")
        return Image.composite(source, Image.new("RGBA", image.size, 0), mask)
    if has_alpha(image):
        out = image if in_place and image.mode == "RGBA" else image.convert("RGBA")
        out.putalpha(ImageChops.multiply(out.getchannel("A"), mask))
        return out
    if image.mode != "RGB":
        out = image.convert("RGB")
    else:
        out = image if in_place else image.copy()
    out.putalpha(mask)
    return out


def encode(image: Image.Image, fmt: str, png_compression: int = 1, threads: int = 1) -> bytes:
    """Encode ``image`` as ``fmt`` (png, webp or jpg)."""
    buffer = io.BytesIO()
    save_to(image, buffer, fmt, png_compression, threads)
    return buffer.getvalue()


def save_to(
    image: Image.Image, target: Any, fmt: str, png_compression: int = 1, threads: int = 1
) -> None:
    """Encode to ``target``, with the ICC profile and EXIF found in ``image.info``.

    PNG goes through :mod:`rmcli.images.png` (faster, multi-threaded) for the modes it writes.
    """
    from rmcli.images import png

    meta = {k: image.info[k] for k in ("icc_profile", "exif") if image.info.get(k)}
    if fmt == "png" and png.supports(image):
        png.write_png(image, target, png_compression, threads, **meta)
    elif fmt == "png":
        image.save(target, format="PNG", compress_level=png_compression, **meta)
    elif fmt == "webp":
        image.save(target, format="WEBP", lossless=True, **meta)
    elif fmt == "jpg":
        flat = image if image.mode in ("L", "RGB") else image.convert("RGB")
        flat.save(target, format="JPEG", quality=95, **meta)
    else:
        raise ValueError(f"unknown output format {fmt!r}")


def write_image(
    image: Image.Image,
    path: Path | str,
    fmt: str,
    png_compression: int = 1,
    threads: int = 1,
    before_commit: Callable[[], None] | None = None,
) -> None:
    """Write ``image`` to ``path`` (or a storage URL) atomically, creating its folder;
    ``before_commit`` may raise to leave nothing under the final name."""
    from rmcli.images import storage

    if storage.is_url(path):
        data = encode(image, fmt, png_compression, threads)
        if before_commit is not None:
            before_commit()
        storage.write_bytes(path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, before_commit) as tmp, open(tmp, "wb") as handle:
        save_to(image, handle, fmt, png_compression, threads)
