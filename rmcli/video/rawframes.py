"""Raw RGB24 frames in (as ``rembg b`` reads them), cut-outs out: numbered PNG files, PNG
images one after the other, or raw RGBA frames. Runs the same three-stage pipeline as clips.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from rmcli.errors import InputError
from rmcli.video.clip import ClipInterrupted, run_stages
from rmcli.video.decode import Frame

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.contracts.output import ComposeOptions
    from rmcli.video.clip import FrameMasker

log = logging.getLogger("rmcli.video")


class RawStream:
    """Frames of ``width`` x ``height`` RGB24 from a byte stream, written as ``output``
    (a printf-style file name) says, or to the output stream (PNG, or RGBA with ``raw``)."""

    def __init__(
        self,
        remover: FrameMasker,
        width: int,
        height: int,
        options: ComposeOptions,
        output: str | None = None,
        raw: bool = False,
    ) -> None:
        self.remover = remover
        self.size = (width, height)
        self.options = options
        self.output = output
        self.raw = raw

    def frames(self, source: IO[bytes]) -> Iterator[Frame]:
        from PIL import Image

        width, height = self.size
        frame_bytes = width * height * 3
        index = 0
        while True:
            data = _read_exactly(source, frame_bytes)
            if len(data) < frame_bytes:
                if data:
                    log.warning(
                        "the last %d bytes on stdin are not a whole %dx%d RGB24 frame; ignored",
                        len(data),
                        width,
                        height,
                    )
                return
            yield Frame(index, index, Image.frombuffer("RGB", self.size, data, "raw", "RGB", 0, 1))
            index += 1

    def run(self, source: IO[bytes], sink: IO[bytes], stop: threading.Event | None = None) -> int:
        """Process every frame of ``source``; the number of frames written."""
        from rmcli.images.compose import compose

        png_level = self.remover.settings["png_compression"]
        smooth = None
        if self.remover.settings["video_smoothing"]:
            from rmcli.video.smoothing import TemporalSmoother

            smooth = TemporalSmoother()
        count = 0

        def write(frame: Frame, mask: Image.Image) -> None:
            nonlocal count
            if smooth is not None:
                mask = smooth(mask)
            result = compose(frame.image, mask, self.options, "png", in_place=True)
            if self.raw:
                if result.mode not in ("RGBA", "L"):
                    result = result.convert("RGBA")
                sink.write(result.tobytes())
                sink.flush()
            elif self.output is None:
                from rmcli.images.imaging import encode

                sink.write(encode(result, "png", png_level))
                sink.flush()
            else:
                from rmcli.images.imaging import write_image

                path = Path(self.output % frame.index)
                try:
                    write_image(result, path, "png", png_level)
                except OSError as exc:
                    raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
            count += 1

        try:
            run_stages(self.remover, self.frames(source), write, "<stdin>", None, stop=stop)
        except ClipInterrupted:
            pass
        return count


def _read_exactly(source: IO[bytes], size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream."""
    chunks = []
    missing = size
    while missing:
        chunk = source.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)
