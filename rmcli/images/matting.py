"""Alpha matting with pymatting (the optional extra ``rmcli[matting]``), bounded on big photos.

Same trimap and solvers as rembg's ``alpha_matting_cutout``. Images above
``matting_max_pixels`` are matted on a downscaled copy whose alpha and foreground are scaled
back up, so the solver's time and memory stay bounded whatever the photo size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rmcli.errors import UsageError
from rmcli.extras import pip_install

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from rmcli.contracts.output import ComposeOptions

INSTALL_HINT = f"alpha matting needs pymatting: {pip_install('matting')}"


def require_pymatting() -> None:
    """Raise a UsageError naming the extra to install when pymatting is missing."""
    import importlib.util

    if importlib.util.find_spec("pymatting") is None:
        raise UsageError(INSTALL_HINT)


def matte_cutout(image: Image.Image, mask: Image.Image, options: ComposeOptions) -> Image.Image:
    """RGBA cut-out with alpha from closed-form matting and the estimated foreground colour."""
    import numpy as np
    from PIL import Image, ImageChops

    from rmcli.images.imaging import cutout, has_alpha

    require_pymatting()
    from pymatting.alpha.estimate_alpha_cf import estimate_alpha_cf
    from pymatting.foreground.estimate_foreground_ml import estimate_foreground_ml

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = min(1.0, math.sqrt(options.matting_max_pixels / (width * height)))
    erode = options.alpha_matting_erode_size
    small_rgb, small_mask = rgb, mask
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        small_mask = mask.resize(size, Image.Resampling.LANCZOS)
        erode = max(1, round(erode * scale)) if erode > 0 else 0
    trimap = make_trimap(
        np.asarray(small_mask),
        options.alpha_matting_foreground_threshold,
        options.alpha_matting_background_threshold,
        erode,
    )
    pixels = np.asarray(small_rgb) / 255.0
    try:
        alpha = estimate_alpha_cf(pixels, trimap / 255.0)
        foreground = estimate_foreground_ml(pixels, alpha)
    except ValueError:  # e.g. a trimap without foreground or background: rembg falls back too
        return cutout(image, mask)
    alpha_image = Image.fromarray(np.clip(alpha * 255, 0, 255).astype(np.uint8), mode="L")
    fg_image = Image.fromarray(np.clip(foreground * 255, 0, 255).astype(np.uint8), mode="RGB")
    if scale < 1.0:
        alpha_image = alpha_image.resize((width, height), Image.Resampling.LANCZOS)
        fg_image = fg_image.resize((width, height), Image.Resampling.LANCZOS)
        opaque = alpha_image.point(lambda v: 255 if v == 255 else 0)
        fg_image = Image.composite(rgb, fg_image, opaque)  # full-resolution colour inside
    if has_alpha(image):
        alpha_image = ImageChops.multiply(alpha_image, image.convert("RGBA").getchannel("A"))
    fg_image.putalpha(alpha_image)
    return fg_image


def make_trimap(mask: np.ndarray, foreground: int, background: int, erode: int) -> np.ndarray:
    """rembg's trimap: 255 sure foreground, 0 sure background (both eroded), 128 unknown."""
    import numpy as np

    is_fg = mask > foreground
    is_bg = mask < background
    if erode > 0:
        is_fg = _erode(is_fg, erode, border=False)
        is_bg = _erode(is_bg, erode, border=True)
    trimap = np.full(mask.shape, 128, dtype=np.uint8)
    trimap[is_fg] = 255
    trimap[is_bg] = 0
    return trimap


def _erode(region: np.ndarray, size: int, border: bool) -> np.ndarray:
    """scipy.ndimage.binary_erosion with a size x size square (same origin and border value)."""
    import numpy as np

    before, after = size // 2, size - 1 - size // 2
    padded = np.pad(region, (before, after), constant_values=border).astype(np.int32)
    sums = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int32)
    np.cumsum(np.cumsum(padded, axis=0), axis=1, out=sums[1:, 1:])
    height, width = region.shape
    window = (
        sums[size : size + height, size : size + width]
        - sums[:height, size : size + width]
        - sums[size : size + height, :width]
        + sums[:height, :width]
    )
    return window == size * size


def warm_matting() -> None:
    """Run alpha matting once on a tiny image: numba compiles pymatting's kernels (or loads
    them from its cache)."""
    from PIL import Image

    from rmcli.contracts.output import ComposeOptions

    image = Image.new("RGB", (32, 32), (200, 50, 50))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    matte_cutout(image, mask, ComposeOptions(alpha_matting=True))
