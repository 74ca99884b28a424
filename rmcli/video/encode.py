"""Writing a clip: WebM VP9 or QuickTime ProRes 4444 with alpha, H.264 MP4, animated WebP or
GIF, or a folder of numbered frames. Every writer works on a temporary name beside the target
and renames it into place only when the whole clip is written (:meth:`ClipWriter.finish`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.errors import InputError
from rmcli.images.naming import FRAME_FOLDER_FORMATS

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.video.decode import Timing

log = logging.getLogger("rmcli.video")

# audio codecs each container takes as they are; others are transcoded to the first one
AUDIO_CODECS = {
    "webm": ("libopus", {"opus", "vorbis"}),
    "mov": ("aac", {"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "opus"}),
    "mp4": ("aac", {"aac", "mp3", "alac", "opus", "ac3"}),
}


class ClipWriter:
    """Receives upright frames in order (``add``) and audio packets; ``finish`` or ``abort``."""

    def add(self, image: Image.Image, pts: int, duration: int | None = None) -> None:
        """One frame; ``pts`` and ``duration`` count the source's time base units."""
        raise NotImplementedError

    def add_audio(self, packet: Any) -> None:
        """An audio packet of the source (dropped by formats that hold no audio)."""

    def finish(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def open_writer(fmt: str, target: Path, timing: Timing, threads: int = 1) -> ClipWriter:
    """The writer for ``fmt`` (webm, mov, mp4, webp, gif; png or jpg: a folder of frames) that
    ends up at ``target``; a symbolic link is followed to its target, a device, FIFO or
    standard output refused (a clip is written whole, then renamed into place)."""
    from rmcli.atomic import write_target

    try:
        resolved, in_place = write_target(target)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from None
    if in_place:
        raise InputError(
            f"cannot write a clip into {target}: clips go to files or folders only, "
            "not devices, FIFOs or standard output"
        )
    target = resolved
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt in FRAME_FOLDER_FORMATS:
        return FrameFolderWriter(fmt, target, threads)
    if fmt == "gif":
        return GifWriter(target, timing)
    return AvWriter(fmt, target, timing, threads)


def _temp_beside(target: Path) -> Path:
    # a fixed-length name (whatever the target's), which rmcli.atomic's sweep recognises
    fd, name = tempfile.mkstemp(prefix=".rmcli.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


class AvWriter(ClipWriter):
    """webm (VP9), mov (ProRes 4444 / 422 HQ), mp4 (H.264) and animated webp, through PyAV.

    The video stream is made on the first frame, when its size and alpha are known.
    """

    MUXERS = {"webm": "webm", "mov": "mov", "mp4": "mp4", "webp": "webp"}

    def __init__(self, fmt: str, target: Path, timing: Timing, threads: int) -> None:
        from rmcli.video import require_av

        av = require_av(f"--format {fmt}")  # animated GIF input needs no PyAV; these do

        self.av = av
        self.fmt = fmt
        self.target = target
        self.timing = timing
        self.threads = max(1, threads)
        self.tmp = _temp_beside(target)
        options = {"loop": "0"} if fmt == "webp" else {}
        self.container = av.open(str(self.tmp), "w", format=self.MUXERS[fmt], options=options)
        self.stream = None
        self.audio_out = None
        self.audio_decoder = None
        self.waiting_audio: list[Any] = []
        self.size: tuple[int, int] | None = None
        self.durations: dict[int, int] = {}  # pts -> duration, of frames not yet muxed

    def _open_video(self, image: Image.Image) -> None:
        alpha = image.mode in ("RGBA", "LA")
        width, height = image.size
        if self.fmt == "mp4":  # 4:2:0 H.264 needs even sides: repeat the last row/column
            width += width % 2
            height += height % 2
        codec, pix_fmt, options = {
            "webm": (
                "libvpx-vp9",
                "yuva420p" if alpha else "yuv420p",
                {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "28"},
            ),
            "mov": (
                "prores_ks",
                "yuva444p10le" if alpha else "yuv422p10le",
                {"profile": "4444" if alpha else "hq", "vendor": "apl0"},
            ),
            "mp4": ("libx264", "yuv420p", {"preset": "veryfast", "crf": "18"}),
            "webp": ("libwebp_anim", "yuva420p" if alpha else "yuv420p", {"quality": "90"}),
        }[self.fmt]
        stream = self.container.add_stream(codec, rate=self.timing.rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt
        stream.time_base = self.timing.time_base
        stream.codec_context.time_base = self.timing.time_base
        if self.fmt == "webm":
            stream.codec_context.bit_rate = 0  # constant quality (crf)
        stream.codec_context.thread_count = self.threads
        stream.codec_context.options = options
        self.stream = stream
        self.size = (width, height)
        self._open_audio()

    def _open_audio(self) -> None:
        source = self.timing.audio
        if source is None or self.fmt not in AUDIO_CODECS:
            if source is not None:
                log.info("%s: the audio is left out (%s holds no audio)", self.target, self.fmt)
            return
        transcode_to, copied = AUDIO_CODECS[self.fmt]
        name = source.codec_context.name
        if name in copied:
            self.audio_out = self.container.add_stream_from_template(source)
            return
        rate = 48000 if transcode_to == "libopus" else (source.codec_context.sample_rate or 48000)
        self.audio_out = self.container.add_stream(transcode_to, rate=rate)
        layout = source.codec_context.layout
        if layout is not None and layout.nb_channels:
            self.audio_out.layout = layout.name if layout.nb_channels <= 2 else "stereo"
        self.audio_decoder = self.av.CodecContext.create(name, "r")
        if source.codec_context.extradata:
            self.audio_decoder.extradata = source.codec_context.extradata
        self.audio_decoder.sample_rate = source.codec_context.sample_rate
        self.audio_decoder.layout = source.codec_context.layout

    def add(self, image: Image.Image, pts: int, duration: int | None = None) -> None:
        if self.stream is None:
            self._open_video(image)
            for packet in self.waiting_audio:
                self._mux_audio(packet)
            self.waiting_audio.clear()
        frame = self._frame(image)
        frame.pts = pts
        frame.time_base = self.timing.time_base
        if duration:
            self.durations[pts] = duration
        self._mux_video(self.stream.encode(frame))

    def _mux_video(self, packets: list[Any]) -> None:
        """Mux, giving each packet its frame's duration (so the last frame keeps its own)."""
        for packet in packets:
            duration = self.durations.pop(packet.pts, None)
            if duration and not packet.duration:
                packet.duration = duration
            self.container.mux(packet)

    def _frame(self, image: Image.Image):
        import numpy as np

        if image.size != self.size:  # mp4 of odd size: pad by repeating the edge
            pixels = np.asarray(image)
            pad = [(0, self.size[1] - image.height), (0, self.size[0] - image.width)]
            pixels = np.pad(pixels, pad + [(0, 0)] * (pixels.ndim - 2), mode="edge")
            from PIL import Image

            image = Image.fromarray(pixels, mode=image.mode)
        if image.mode == "LA":
            image = image.convert("RGBA")
        elif image.mode not in ("RGB", "RGBA", "L"):
            image = image.convert("RGB")
        fmt = {"RGB": "rgb24", "RGBA": "rgba", "L": "gray"}[image.mode]
        return self.av.VideoFrame.from_ndarray(np.asarray(image), format=fmt)

    def add_audio(self, packet: Any) -> None:
        if self.stream is None:
            self.waiting_audio.append(packet)
            return
        self._mux_audio(packet)

    def _mux_audio(self, packet: Any) -> None:
        if self.audio_out is None:
            return
        if self.audio_decoder is None:
            packet.stream = self.audio_out
            self.container.mux(packet)
            return
        try:
            frames = self.audio_decoder.decode(packet)
        except self.av.error.FFmpegError as exc:
            log.warning("%s: an audio packet could not be decoded: %s", self.target, exc)
            return
        for frame in frames:
            frame.pts = None  # the encoder counts samples itself
            self.container.mux(self.audio_out.encode(frame))

    def finish(self) -> None:
        try:
            if self.stream is not None:
                self._mux_video(self.stream.encode(None))
            if self.audio_out is not None and self.audio_decoder is not None:
                self.container.mux(self.audio_out.encode(None))
            self.container.close()
        except BaseException:
            self.abort()
            raise
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.target)

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing half-written output may fail; it is deleted anyway
            pass
        self.tmp.unlink(missing_ok=True)


class GifWriter(ClipWriter):
    """Animated GIF by Pillow: 255 colours plus full transparency where alpha < 128.

    Pillow writes a GIF in one call, so the frames (one byte per pixel) stay in memory until
    :meth:`finish`: meant for short clips.
    """

    def __init__(self, target: Path, timing: Timing) -> None:
        self.target = target
        self.timing = timing
        self.frames: list[Image.Image] = []
        self.pts: list[int] = []
        self.last_duration: int | None = None

    def add(self, image: Image.Image, pts: int, duration: int | None = None) -> None:
        import numpy as np
        from PIL import Image

        rgb = image.convert("RGB").quantize(255)
        if "A" in image.getbands():
            indices = np.array(rgb)
            indices[np.asarray(image.getchannel("A")) < 128] = 255
            paletted = Image.fromarray(indices, mode="P")
            paletted.putpalette(rgb.getpalette())
            paletted.info["transparency"] = 255
            rgb = paletted
        self.frames.append(rgb)
        self.pts.append(pts)
        self.last_duration = duration

    def finish(self) -> None:
        if not self.frames:
            return
        to_ms = float(self.timing.time_base * 1000)
        step = round(1000 / float(self.timing.rate))
        if self.last_duration:
            step = max(10, round(self.last_duration * to_ms))
        durations = [
            max(10, round((b - a) * to_ms)) for a, b in zip(self.pts, self.pts[1:], strict=False)
        ] + [step]
        tmp = _temp_beside(self.target)
        try:
            first, *rest = self.frames
            first.save(
                tmp,
                format="GIF",
                save_all=True,
                append_images=rest,
                duration=durations,
                loop=0,
                disposal=2,
                transparency=255 if "transparency" in first.info else None,
            )
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.target)
        finally:
            tmp.unlink(missing_ok=True)
            self.frames.clear()

    def abort(self) -> None:
        self.frames.clear()


class FrameFolderWriter(ClipWriter):
    """A folder of numbered frames (``00001.png``, ...); the folder appears complete or not at
    all (an existing one is replaced only once the new one is written)."""

    def __init__(self, fmt: str, target: Path, threads: int) -> None:
        if target.exists() and not target.is_dir():
            raise InputError(f"cannot write frames to {target}: it is a file")
        self.fmt = fmt
        self.target = target
        self.threads = threads
        self.tmp = Path(tempfile.mkdtemp(prefix=".rmcli.", dir=target.parent))
        self.count = 0

    def add(self, image: Image.Image, pts: int, duration: int | None = None) -> None:
        from rmcli.images.imaging import save_to

        self.count += 1
        with open(self.tmp / f"{self.count:05d}.{self.fmt}", "wb") as handle:
            save_to(image, handle, self.fmt, 1, self.threads)

    def finish(self) -> None:
        os.chmod(self.tmp, 0o755)
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=".rmcli.old.", dir=self.target.parent))
            os.replace(self.target, old / "frames")
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
