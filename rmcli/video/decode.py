"""Reading a clip frame by frame: upright RGB(A) frames with their timestamps, audio packets.

Every failure is an :class:`InputError` naming the frame where decoding stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from rmcli.errors import InputError
from rmcli.video.probe import Clip, _reason

if TYPE_CHECKING:
    from PIL import Image

MS = Fraction(1, 1000)


@dataclass
class Frame:
    """One decoded frame: ``pts`` counts ``time_base`` units from the clip's start."""

    index: int
    pts: int
    image: Image.Image
    duration: int | None = None  # in time_base units, when the source says


@dataclass(frozen=True)
class Timing:
    """How a clip counts time: its time base, average frame rate and audio stream (if any)."""

    time_base: Fraction
    rate: Fraction
    audio: Any = None  # PyAV input audio stream, for the writer to copy or transcode


def check_limit(clip: Clip, max_pixels: int) -> None:
    if clip.pixels > max_pixels:
        raise InputError(
            f"{clip.label}: frames of {clip.width}x{clip.height} = {clip.pixels:,} pixels, over "
            f"the limit of {max_pixels:,} set by max_pixels (RMCLI_MAX_PIXELS)"
        )


class ClipReader:
    """Opens ``clip``; :meth:`items` yields :class:`Frame` and audio packets in file order."""

    def __init__(self, clip: Clip, with_audio: bool = True) -> None:
        self.clip = clip
        self.decoded = 0
        self._container = None
        self._with_audio = with_audio
        if clip.kind == "animation":
            self.timing = Timing(MS, clip.rate or Fraction(10))
            return
        import av

        try:
            self._container = av.open(str(clip.path))
        except av.error.FFmpegError as exc:
            raise InputError(f"{clip.label}: cannot open video: {_reason(exc)}") from None
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        audio = self._container.streams.audio[0] if self._container.streams.audio else None
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        self.timing = Timing(stream.time_base or Fraction(1, 90000), rate, audio)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()

    def items(self) -> Iterator[Frame | Any]:
        if self.clip.kind == "animation":
            yield from self._animation_frames()
        else:
            yield from self._video_items()
        if self.decoded == 0:
            raise InputError(f"{self.clip.label}: no frames (the video stream is empty)")

    def _fail(self, reason: str) -> InputError:
        of = f" of {self.clip.frames}" if self.clip.frames else ""
        return InputError(
            f"{self.clip.label}: frame {self.decoded + 1}{of}: cannot decode: {reason}"
        )

    def _video_items(self) -> Iterator[Frame | Any]:
        import av

        container = self._container
        video = container.streams.video[0]
        audio = self.timing.audio if self._with_audio else None
        streams = [video] + ([audio] if audio is not None else [])
        start = None
        last_end = 0
        try:
            for packet in container.demux(streams):
                if packet.stream is audio:
                    if packet.dts is not None:
                        yield packet
                    continue
                for frame in packet.decode():
                    if frame.is_corrupt:
                        raise self._fail("corrupt data")
                    pts = frame.pts if frame.pts is not None else self.decoded
                    if start is None:
                        start = pts
                    image = _upright(frame.to_image(), frame.rotation)
                    yield Frame(self.decoded, pts - start, image, frame.duration or None)
                    self.decoded += 1
                    last_end = pts - start + (frame.duration or 0)
        except av.error.FFmpegError as exc:
            raise self._fail(_reason(exc)) from None
        self._check_complete(last_end)

    def _check_complete(self, last_end: int) -> None:
        """A truncated file often just ends: compare with the frame count or the duration."""
        clip = self.clip
        if clip.frames and self.decoded < clip.frames:
            raise self._fail("the file ends early (truncated?)")
        if clip.frames or not clip.duration:
            return
        decoded_seconds = float(last_end * self.timing.time_base) if self.decoded else 0.0
        slack = max(3 / float(self.timing.rate), 0.02 * clip.duration)
        if decoded_seconds + slack < clip.duration:
            raise self._fail(
                f"the file ends early at {decoded_seconds:.2f} s of {clip.duration:.2f} s "
                "(truncated?)"
            )

    def _animation_frames(self) -> Iterator[Frame]:
        from PIL import Image

        pts = 0
        try:
            with Image.open(self.clip.path) as image:
                for index in range(self.clip.frames or 1):
                    image.seek(index)
                    rgba = image.convert("RGBA")  # decodes the frame, and so sets its info
                    duration = int(image.info.get("duration") or 0) or None
                    yield Frame(index, pts, rgba, duration)
                    self.decoded += 1
                    pts += duration or round(1000 / self.timing.rate)
        except InputError:
            raise
        except Exception as exc:  # Pillow raises many types on damaged data
            raise self._fail(str(exc) or type(exc).__name__) from None


def _upright(image: Image.Image, rotation: float | int | None) -> Image.Image:
    """Apply the display matrix's rotation (degrees counter-clockwise, as FFmpeg reports it)."""
    from PIL import Image

    turns = round((rotation or 0) / 90) % 4
    if turns == 0:
        return image
    method = {
        1: Image.Transpose.ROTATE_90,
        2: Image.Transpose.ROTATE_180,
        3: Image.Transpose.ROTATE_270,
    }[turns]
    return image.transpose(method)
