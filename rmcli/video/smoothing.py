"""Temporal smoothing of masks, and the flicker measure it is judged by.

Where a mask changes little from one frame to the next (model noise on a still background
or a still subject), the new value is blended with the previous smoothed one; where it
changes a lot (a moving edge) the new value is taken as it is, so motion is not smeared.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class TemporalSmoother:
    """Blend each mask with the previous output: weight ``strength`` where the change is
    small, falling linearly to 0 at a change of ``motion`` (of 255) and above."""

    def __init__(self, strength: float = 0.6, motion: float = 48.0) -> None:
        self.strength = strength
        self.motion = motion
        self._previous: np.ndarray | None = None

    def __call__(self, mask: Image.Image) -> Image.Image:
        import numpy as np
        from PIL import Image

        current = np.asarray(mask, dtype=np.float32)
        previous = self._previous
        if previous is None or previous.shape != current.shape:
            self._previous = current
            return mask
        change = np.abs(current - previous)
        keep = self.strength * np.clip(1.0 - change / self.motion, 0.0, 1.0)
        smoothed = current + keep * (previous - current)
        self._previous = smoothed
        return Image.fromarray(np.rint(smoothed).astype(np.uint8), mode="L")


def flicker(masks: Iterable[np.ndarray]) -> float:
    """Mean absolute change of alpha (0-255) between consecutive frames."""
    import numpy as np

    total = 0.0
    pairs = 0
    previous = None
    for mask in masks:
        current = np.asarray(mask, dtype=np.float32)
        if previous is not None:
            total += float(np.abs(current - previous).mean())
            pairs += 1
        previous = current
    return total / pairs if pairs else 0.0
