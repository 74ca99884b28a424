"""Reading results: a cut-out's alpha channel, a perceptual hash to compare two images."""

from __future__ import annotations

import numpy as np
from PIL import Image


def alpha_of(path_or_image) -> np.ndarray:
    """The alpha channel (or the single band of a mask) of a file or image, as floats."""
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.getchannel("A") if "A" in image.getbands() else image, dtype=float)


def phash(image: Image.Image) -> np.ndarray:
    """imagehash.phash: 32x32 grey, 2-D DCT-II, top-left 8x8 compared with its median."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), float)
    n = np.arange(32)
    basis = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)
    dct = basis @ pixels @ basis.T
    low = dct[:8, :8]
    return low > np.median(low)
