"""The work of one image, stage by stage: decode → mask → compose → encode.

Every front end runs these functions: ``rmcli remove`` and ``Remover.map`` (through the batch
runner), ``Remover.remove``, ``rmcli.compat``, the service and its Dask workers, and video
frames (compose). ``clock(stage)`` times
each stage: ``decode``, the masker's ``preprocess``, ``inference`` and ``postprocess``, then
``compose`` and ``encode``. A front end may run the stages on different threads (the service
decodes and masks on an inference slot, composes and encodes on its codec pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from rmcli.contracts.clock import Clock, untimed
from rmcli.errors import TooLargeError
from rmcli.images.compose import compose
from rmcli.images.imaging import ImageSource, encodable, encode, load_image

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.contracts.executor import Masker
    from rmcli.contracts.output import ComposeOptions

log = logging.getLogger(__name__)


def decode_and_mask(
    masker: Masker,
    source: ImageSource,
    label: str | None = None,
    clock: Clock = untimed,
) -> tuple[Image.Image, Image.Image]:
    """``source`` decoded upright (refused over the ``max_pixels`` setting) and its mask;
    ``label`` names it in errors (None: its path, else ``<image>``)."""
    with clock("decode"):
        image = load_image(source, label, masker.settings["max_pixels"], _note)
    return image, masker.mask_of(image, clock)


def compose_checked(
    image: Image.Image,
    mask: Image.Image,
    options: ComposeOptions,
    fmt: str,
    label: str,
    clock: Clock = untimed,
) -> Image.Image:
    """The image to write (``image`` may be reused); a :class:`TooLargeError` when ``fmt``
    cannot hold its size."""
    with clock("compose"):
        result = compose(image, mask, options, fmt, True, _labelled(label))
    too_large = encodable(result.size, fmt)
    if too_large:
        raise TooLargeError(f"{label}: {too_large}")
    return result


def encoded(
    result: Image.Image,
    fmt: str,
    png_compression: int = 1,
    threads: int = 1,
    clock: Clock = untimed,
) -> bytes:
    """``result`` encoded as ``fmt``."""
    with clock("encode"):
        return encode(result, fmt, png_compression, threads)


def _note(message: str) -> None:
    log.info(f"note: {message}")


def _labelled(label: str) -> Callable[[str], None]:
    return lambda message: _note(f"{label}: {message}")
