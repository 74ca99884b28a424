"""Telling clips from still images by probing the file, and what a clip's header says."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from rmcli.errors import InputError
from rmcli.images.imaging import VIDEO_SUFFIXES

ANIMATED_SUFFIXES = {".gif", ".webp"}  # may hold one frame (a still) or many (a clip)
STILL_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Clip:
    """A video or an animated image: what its header says, before any frame is decoded."""

    path: Path
    label: str
    kind: str  # "video" (PyAV) or "animation" (animated GIF/WebP, Pillow)
    width: int
    height: int
    frames: int | None  # from the header; None when the container does not say
    duration: float | None  # seconds; None when unknown
    rate: Fraction | None  # average frame rate
    has_audio: bool = False

    @property
    def expected_frames(self) -> int | None:
        """The frame count from the header, else estimated from duration and rate."""
        if self.frames:
            return self.frames
        if self.duration and self.rate:
            return max(1, round(self.duration * float(self.rate)))
        return None

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe(source: Any, label: str) -> Clip | None:
    """The :class:`Clip` at ``source``, or None for a still image (or anything not a clip).

    Files named like still photos are not opened here; ``.gif``/``.webp`` are clips when
    Pillow sees more than one frame; video suffixes and unknown suffixes are probed with
    PyAV. Only local files are probed (URLs and standard input are stills).
    """
    if not isinstance(source, str | Path):
        return None
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in STILL_SUFFIXES or not path.is_file():
        return None
    if suffix in ANIMATED_SUFFIXES:
        return _probe_animation(path, label)
    if suffix not in VIDEO_SUFFIXES and _pillow_reads(path):
        return None
    return _probe_video(path, label, required=suffix in VIDEO_SUFFIXES)


def _pillow_reads(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Exception:  # anything Pillow cannot identify may still be a video
        return False


def _probe_animation(path: Path, label: str) -> Clip | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            frames = int(getattr(image, "n_frames", 1)) if getattr(image, "is_animated", 0) else 1
            if frames < 2:
                return None
            total_ms = 0
            for index in range(frames):
                image.seek(index)
                if image.format == "WEBP":
                    image.load()  # Pillow reads a WebP frame's duration when decoding it
                total_ms += int(image.info.get("duration") or 0)
            width, height = image.size
    except Exception:  # let the still-image path report what is wrong with it
        return None
    duration = total_ms / 1000 if total_ms else None
    rate = Fraction(frames * 1000, total_ms) if total_ms else None
    return Clip(path, label, "animation", width, height, frames, duration, rate)


def _probe_video(path: Path, label: str, required: bool) -> Clip | None:
    from rmcli.video import require_av

    av = require_av(label) if required else _optional_av()
    if av is None:
        return None
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        if not required:
            return None
        raise InputError(f"{label}: cannot open video: {_reason(exc)}") from None
    with container:
        if not container.streams.video:
            if not required:
                return None
            raise InputError(f"{label}: no video stream")
        stream = container.streams.video[0]
        width = stream.codec_context.width
        height = stream.codec_context.height
        frames = stream.frames or None
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        rate = stream.average_rate or stream.guessed_rate or None
        has_audio = bool(container.streams.audio)
    return Clip(path, label, "video", width, height, frames, duration, rate, has_audio)


def _optional_av():
    try:
        import av
    except ImportError:
        return None
    return av


def _reason(exc: Exception) -> str:
    """FFmpeg's reason without the errno and file name PyAV adds."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__
