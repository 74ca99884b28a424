"""Output composition: mask post-processing, matting, cut-out, crop, background, format, metadata.

:func:`compose` turns an upright image and its mask into the image that gets written, as
:class:`ComposeOptions` asks. ``Remover.remove(...)`` and ``rmcli remove`` both go through it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rmcli.colors import WHITE, Color
from rmcli.contracts.output import ComposeOptions
from rmcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def check_options(options: ComposeOptions) -> None:
    """Fail early (UsageError) on what would fail every image: background, pymatting."""
    if isinstance(options.bg_image, Path):
        load_background(options.bg_image)
    if options.alpha_matting:
        from rmcli.images.matting import require_pymatting

        require_pymatting()


def compose(
    image: Image.Image,
    mask: Image.Image,
    options: ComposeOptions,
    fmt: str = "png",
    in_place: bool = False,
    notice: Callable[[str], None] | None = None,
) -> Image.Image:
    """The image to write for ``image`` (upright, 8-bit) and its model ``mask`` ("L").

    ``in_place=True`` lets the cut-out reuse ``image`` (the caller no longer needs it).
    ``notice`` receives a line for each metadata block dropped (default: a logged warning).

    Order: post-process mask, matting or cut-out, crop, background, JPEG flattening.
    ICC profile and EXIF (orientation 1) of ``image`` are put in the result's ``info``.
    """
    from PIL import Image

    from rmcli.images.imaging import cutout, has_alpha

    if options.post_process_mask:
        mask = post_process_mask(mask)
    if options.only_mask:
        result = mask
        if options.crop:
            result = result.crop(crop_box(mask, options.crop_threshold, options.crop_margin))
        result.info = _metadata(image, result, fmt, notice)
        return result
    if options.alpha_matting:
        from rmcli.images.matting import matte_cutout

        result = matte_cutout(image, mask, options)
    else:
        result = cutout(image, mask, premultiplied=options.premultiplied, in_place=in_place)
    if options.crop:
        box = crop_box(result.getchannel("A"), options.crop_threshold, options.crop_margin)
        result = result.crop(box)
    background = None
    if options.bg_image is not None:
        background = cover(background_image(options.bg_image), result.size)
    elif options.bgcolor is not None:
        background = Image.new("RGBA", result.size, options.bgcolor)
    if background is not None:
        result = Image.alpha_composite(background, result)
        if not options.keep_alpha and result.getchannel("A").getextrema() == (255, 255):
            result = result.convert("RGB")  # an opaque background: no alpha channel needed
    if fmt == "jpg" and has_alpha(result):
        result = flatten(result, options.bgcolor or WHITE)
    result.info = _metadata(image, result, fmt, notice)
    return result


def flatten(image: Image.Image, color: Color) -> Image.Image:
    """RGB of ``image`` over ``color`` (itself over white when ``color`` is translucent)."""
    from PIL import Image

    base = Image.new("RGBA", image.size, WHITE)
    base = Image.alpha_composite(base, Image.new("RGBA", image.size, color))
    return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")


def crop_box(alpha: Image.Image, threshold: int, margin: int) -> tuple[int, int, int, int]:
    """Smallest box holding every pixel with alpha above ``threshold``, grown by ``margin``.

    The whole image when no pixel is above the threshold.
    """
    box = alpha.point(lambda v: 255 if v > threshold else 0).getbbox()
    width, height = alpha.size
    if box is None:
        return (0, 0, width, height)
    left, top, right, bottom = box
    return (
        max(0, left - margin),
        max(0, top - margin),
        min(width, right + margin),
        min(height, bottom + margin),
    )


def cover(background: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``background`` scaled to cover ``size`` (aspect kept) and centre-cropped, as RGBA."""
    from PIL import Image

    width, height = size
    scale = max(width / background.width, height / background.height)
    scaled_size = (
        max(width, round(background.width * scale)),
        max(height, round(background.height * scale)),
    )
    scaled = background.resize(scaled_size, Image.Resampling.LANCZOS)
    left = (scaled.width - width) // 2
    top = (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height)).convert("RGBA")


def background_image(given: Path | str | Image.Image) -> Image.Image:
    """The background as an image: ``given`` itself, or the image at its path."""
    from PIL import Image

    if isinstance(given, Image.Image):
        return given
    return load_background(Path(given))


@functools.lru_cache(maxsize=2)
def load_background(path: Path) -> Image.Image:
    """The background image at ``path`` (loaded once per process); unreadable: UsageError."""
    from rmcli.errors import InputError
    from rmcli.images.imaging import load_image

    try:
        image = load_image(path, f"background image {path}")
    except InputError as exc:
        raise UsageError(str(exc)) from None
    return image.convert("RGBA")


def post_process_mask(mask: Image.Image) -> Image.Image:
    """rembg's ``post_process``: opening with a 3x3 cross, Gaussian blur (sigma 2), >= 127.

    Same arithmetic as skimage/scipy (float64, reflected borders), in strips of rows to
    keep memory small on large photos.
    """
    import numpy as np
    from PIL import Image

    pixels = np.asarray(mask, dtype=np.uint8)
    opened = _cross_filter(_cross_filter(pixels, np.minimum), np.maximum)
    radius = 8  # scipy: int(truncate * sigma + 0.5) with truncate 4, sigma 2
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 / 2.0**2 * x**2)
    weights /= weights.sum()
    padded = np.pad(opened, radius, mode="symmetric")
    height, width = opened.shape
    out = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, 128):
        rows = min(128, height - top)
        strip = padded[top : top + rows + 2 * radius].astype(np.float64)
        vertical = np.zeros((rows, strip.shape[1]))
        for k, w in enumerate(weights):
            vertical += w * strip[k : k + rows]
        blurred = np.zeros((rows, width))
        for k, w in enumerate(weights):
            blurred += w * vertical[:, k : k + width]
        out[top : top + rows] = np.where(blurred < 127, 0, 255)
    return Image.fromarray(out, mode="L")


def _cross_filter(pixels: np.ndarray, pick) -> np.ndarray:
    """Min or max over each pixel and its 4 neighbours (edges repeated, like skimage)."""
    import numpy as np

    padded = np.pad(pixels, 1, mode="edge")
    out = pick(padded[1:-1, 1:-1], padded[:-2, 1:-1])
    out = pick(out, padded[2:, 1:-1])
    out = pick(out, padded[1:-1, :-2])
    return pick(out, padded[1:-1, 2:])


EXIF_ORIENTATION = 0x0112
# The most one JPEG APP1 segment holds after "Exif\0\0" (Pillow refuses more).
JPEG_MAX_EXIF = 65533 - 6
JPEG_MAX_ICC = 255 * 65519  # Pillow splits a profile over at most 255 APP2 segments
ICC_SIGNATURE = b"acsp"

log = logging.getLogger(__name__)


def _metadata(
    source: Image.Image,
    result: Image.Image,
    fmt: str = "png",
    notice: Callable[[str], None] | None = None,
) -> dict[str, bytes]:
    """ICC profile (when it fits the result's colours) and EXIF with orientation reset to 1.

    Metadata comes from the input file and may be damaged in any way: a block that cannot be
    parsed, or that the output format cannot hold, is dropped with a ``notice`` (the API logs
    a warning) and the image is still written.
    """
    say = notice or log.warning
    info: dict[str, bytes] = {}
    icc = source.info.get("icc_profile")
    if icc and result.mode in ("RGB", "RGBA"):
        if not isinstance(icc, bytes) or len(icc) < 128 or icc[36:40] != ICC_SIGNATURE:
            say("broken ICC profile dropped (no ICC header)")
        elif fmt == "jpg" and len(icc) > JPEG_MAX_ICC:
            say(f"ICC profile dropped: {len(icc):,} bytes is more than JPEG holds")
        elif icc[16:20] == b"RGB ":
            info["icc_profile"] = icc
    try:
        exif = source.getexif()
        if len(exif):
            exif[EXIF_ORIENTATION] = 1
            info["exif"] = exif.tobytes()
    except Exception as exc:  # any parser failure on untrusted bytes: drop the block
        info.pop("exif", None)
        reason = " ".join(str(exc).split())[:120]
        say(f"broken EXIF metadata dropped ({type(exc).__name__}: {reason})")
    exif_bytes = info.get("exif", b"")
    if fmt == "jpg" and len(exif_bytes) > JPEG_MAX_EXIF:
        del info["exif"]
        say(
            f"EXIF metadata dropped: {len(exif_bytes):,} bytes is more than JPEG holds "
            f"({JPEG_MAX_EXIF:,}); use --format png or webp to keep it"
        )
    return info
