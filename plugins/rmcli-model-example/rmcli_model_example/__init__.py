"""An example rmcli model plugin: ``studio-white``, with its weights shipped as package data.

Everything a third-party model needs is here: a ``Model`` subclass that prepares the input
and turns the output into a mask its own way, ``Weights`` that point at a file inside this
package (checked by sha256 before use), and the ``register_models`` hook that rmcli finds
through the ``rmcli`` entry point in pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from rmcli import Model, Weights, hookimpl

WEIGHTS = files(__package__) / "studio-white.onnx"


@dataclass(frozen=True)
class StudioWhite(Model):
    """Keys out a white studio background; the network outputs a probability per pixel."""

    def preprocess(self, image):
        """RGB scaled to [0, 1] by 255 (not by the image's maximum), bilinear to input_size."""
        import numpy as np
        from PIL import Image

        small = image.convert("RGB").resize(self.input_size, Image.Resampling.BILINEAR)
        pixels = np.asarray(small, dtype=np.float32) / 255
        return pixels.transpose(2, 0, 1)[None]

    def to_mask(self, outputs, size):
        """The probability as is (no min-max stretch: an all-subject photo stays opaque)."""
        import numpy as np
        from PIL import Image

        probability = outputs[0][0, 0]
        mask = Image.fromarray(np.rint(probability * 255).astype(np.uint8), mode="L")
        return mask.resize(size, Image.Resampling.BILINEAR)


MODEL = StudioWhite(
    name="studio-white",
    summary="Example plugin: keys out white studio backgrounds (345-byte network)",
    weights=Weights(
        filename="studio-white.onnx",
        sha256="27cf836f60a5d0effc305a450818710934814cac241c580d4382d237714a41e2",
        path=str(WEIGHTS),  # used in place from the installed package; never downloaded
    ),
    input_size=(320, 320),
    family="studio-white",
)


@hookimpl
def register_models(register):
    register(MODEL)
