"""One clip through the model: decoding, inference and encoding overlap in three threads.

- the decoding thread reads frames (PyAV or Pillow) and pre-processes them for the model;
- the calling thread runs the shared session on one frame after another (inside the
  runner's inference gate, so still images and clips never run inference at once);
- the encoding thread turns the model output into a mask, smooths and composes it, and
  encodes the frame, muxing audio packets in file order.

Queues of :data:`QUEUE` frames between the stages keep memory flat on clips of any length.
The output appears under its final name only when the last frame is written; a failure or an
interruption leaves nothing behind.
"""

from __future__ import annotations

import io
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rmcli.contracts.clock import Clock, untimed
from rmcli.errors import InputError
from rmcli.images.naming import CLIP_ONLY_FORMATS, clip_output, clip_outputs
from rmcli.video.decode import ClipReader, Frame, check_limit
from rmcli.video.encode import open_writer
from rmcli.video.probe import Clip, probe
from rmcli.video.smoothing import TemporalSmoother

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.config.settings import Settings
    from rmcli.contracts.jobs import Job
    from rmcli.contracts.output import OutputOptions


class FrameMasker(Protocol):
    """What a clip needs of its :class:`rmcli.Remover`: the settings, the model (its
    pre- and post-processing run in the decoding and encoding threads) and the session."""

    settings: Settings

    @property
    def model(self) -> Any: ...

    @property
    def session(self) -> Any: ...


QUEUE = 4  # frames waiting between two stages
_END = object()

# label, frames written so far (0 once the clip is over), frames expected (None: unknown)
FrameListener = Callable[[str, int, int | None], None]
_listener: FrameListener | None = None


class ClipInterrupted(InputError):
    """The batch was stopped (Ctrl-C) in the middle of a clip; nothing was written."""


@contextmanager
def report_frames_to(listener: FrameListener) -> Iterator[None]:
    """While active, ``listener`` is told of every frame written (for progress displays)."""
    global _listener
    previous, _listener = _listener, listener
    try:
        yield
    finally:
        _listener = previous


def handle(
    remover: FrameMasker,
    job: Job,
    options: OutputOptions,
    clock: Clock = untimed,
    stop: threading.Event | None = None,
) -> bool:
    """Process ``job`` here if its input is a clip (True); False for a still image.

    A still image asked for a clip-only format (webm, mov, mp4, gif) is an InputError.
    """
    if job.error:
        return False
    clip = probe(job.source, job.label)
    if clip is None:
        if options.fmt in CLIP_ONLY_FORMATS:
            raise InputError(
                f"{job.label}: a still image cannot be written as {options.fmt} "
                "(use png, webp or jpg)"
            )
        return False
    fmt = clip_format(remover.settings, options, clip)
    target = clip_output(job, fmt, options.fmt)
    process_clip(remover, clip, target, fmt, options, clock, stop)
    return True


def plan(jobs: list[Job], settings: Settings, options: OutputOptions) -> list[Job]:
    """``jobs`` with each clip's output named for its format (``clip.webm``, a frame folder...:
    :func:`rmcli.images.naming.clip_outputs`). Clips that cannot even be probed are left as
    they are: processing reports them."""

    def format_of(job: Job) -> str | None:
        try:
            clip = probe(job.source, job.label)
        except InputError:
            return None
        return None if clip is None else clip_format(settings, options, clip)

    return clip_outputs(jobs, format_of, options.fmt)


def clip_format(settings: Settings, options: OutputOptions, clip: Clip) -> str:
    """The format a clip is written in: the one asked for (``output_format`` set by a flag,
    the environment or the config file, or ``-o FILE.mov``), else an animation's own format,
    MP4 over a background, or WebM VP9 with alpha."""
    if settings.given("output_format") or options.fmt != settings["output_format"]:
        return options.fmt  # asked for: a flag, a setting, or the suffix of -o FILE
    if clip.kind == "animation":
        return clip.path.suffix.lower().lstrip(".")
    if options.compose.bgcolor is not None or options.compose.bg_image is not None:
        return "mp4"
    return "webm"


def process_clip(
    remover: FrameMasker,
    clip: Clip,
    target: Path,
    fmt: str,
    options: OutputOptions,
    clock: Clock = untimed,
    stop: threading.Event | None = None,
) -> None:
    """Cut out every frame of ``clip`` and write them to ``target`` as ``fmt``."""
    check_limit(clip, remover.settings["max_pixels"])
    compose_options = options.compose
    smooth = TemporalSmoother() if remover.settings["video_smoothing"] else None
    if compose_options.crop:  # one box for the whole clip: masks first, then the frames
        with _MaskStore() as store:
            box = _first_pass(remover, clip, store, compose_options, smooth, clock, stop)
            uncropped = replace(compose_options, crop=False, post_process_mask=False)
            _run(remover, clip, target, fmt, options, uncropped, None, clock, stop, store, box)
        return
    _run(remover, clip, target, fmt, options, compose_options, smooth, clock, stop)


def _run(
    remover, clip, target, fmt, options, compose_options, smooth, clock, stop, store=None, box=None
) -> None:
    from rmcli.images.stages import compose_checked

    compose_fmt = "jpg" if fmt in ("mp4", "jpg") else "png"  # no alpha: flatten like JPEG
    reader = ClipReader(clip)
    try:
        writer = open_writer(fmt, target, reader.timing, options.threads or 1)
    except InputError as exc:
        reader.close()
        raise InputError(f"{clip.label}: {exc}") from None
    except OSError as exc:
        reader.close()
        raise InputError(f"{clip.label}: cannot write {target}: {exc.strerror or exc}") from None

    def write(frame: Frame, mask: Image.Image) -> None:
        if smooth is not None:
            mask = smooth(mask)
        result = compose_checked(frame.image, mask, compose_options, compose_fmt, clip.label, clock)
        if box is not None:
            result = result.crop(box)
        with clock("encode"):
            writer.add(result, frame.pts, frame.duration)

    try:
        run_stages(
            remover, reader.items(), write, clip.label, clip.expected_frames, clock, stop,
            audio=writer.add_audio, finish=writer.finish, masks=store,
        )  # fmt: skip
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()


def _first_pass(remover, clip, store, compose_options, smooth, clock, stop):
    """Masks of every frame into ``store``; the crop box holding all of them."""
    from rmcli.images.compose import crop_box, post_process_mask

    reader = ClipReader(clip, with_audio=False)
    union: list[int] | None = None
    width = height = 0

    def keep(frame: Frame, mask: Image.Image) -> None:
        nonlocal union, width, height
        if compose_options.post_process_mask:
            mask = post_process_mask(mask)
        if smooth is not None:
            mask = smooth(mask)
        store.add(mask)
        width, height = mask.size
        if mask.getextrema()[1] <= compose_options.crop_threshold:
            return  # nothing above the threshold in this frame
        box = crop_box(mask, compose_options.crop_threshold, compose_options.crop_margin)
        if union is None:
            union = list(box)
        else:
            union = [min(union[0], box[0]), min(union[1], box[1])] + [
                max(union[2], box[2]),
                max(union[3], box[3]),
            ]

    try:
        run_stages(remover, reader.items(), keep, clip.label, clip.frames, clock, stop)
    finally:
        reader.close()
    return tuple(union) if union else (0, 0, width, height)


def run_stages(
    remover: FrameMasker,
    items: Iterator[Any],
    write: Callable[[Frame, Image.Image], None],
    label: str,
    expected: int | None = None,
    clock: Clock = untimed,
    stop: threading.Event | None = None,
    *,
    audio: Callable[[Any], None] | None = None,
    finish: Callable[[], None] | None = None,
    masks: _MaskStore | None = None,
) -> int:
    """Run decode | inference | ``write(frame, mask)`` over ``items`` (frames and audio
    packets, in file order); ``finish()`` after the last frame. Returns the frames written.

    ``masks``: take each frame's mask from this store instead of the model. The first
    failure of any stage is raised here; ``stop`` set (Ctrl-C) raises :class:`ClipInterrupted`.
    """
    model = remover.model
    session = remover.session if masks is None else None
    abort = threading.Event()
    decoded: queue.Queue = queue.Queue(QUEUE)
    inferred: queue.Queue = queue.Queue(QUEUE)
    failures: list[BaseException] = []
    listener = _listener
    written = 0

    def put(q: queue.Queue, item: Any) -> bool:
        while not abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            while True:
                with clock("decode"):
                    item = next(items, _END)
                if item is _END:
                    break
                if isinstance(item, Frame):
                    tensor = None
                    if session is not None:
                        with clock("preprocess"):
                            tensor = model.preprocess(item.image)
                    item = (item, tensor)
                if not put(decoded, item):
                    return
        except BaseException as exc:  # handed to the calling thread, raised there
            put(decoded, exc)
            return
        put(decoded, _END)

    def encode() -> None:
        nonlocal written
        try:
            while True:
                item = _get(inferred, abort)
                if item is _END or item is None:
                    break
                if isinstance(item, tuple):
                    frame, outputs = item
                    if masks is not None:
                        mask = masks.next()
                    else:
                        with clock("postprocess"):
                            mask = model.to_mask(outputs, frame.image.size)
                    write(frame, mask)
                    written += 1
                    if listener is not None:
                        listener(label, written, expected)
                elif audio is not None:
                    audio(item)
            if item is _END and finish is not None:
                with clock("encode"):
                    finish()
        except BaseException as exc:
            failures.append(exc)
            abort.set()

    decoder = threading.Thread(target=decode, name="rmcli-video-decode", daemon=True)
    encoder = threading.Thread(target=encode, name="rmcli-video-encode", daemon=True)
    decoder.start()
    encoder.start()
    frames = 0
    try:
        while True:
            item = _get(decoded, abort)
            if item is None:  # the encoder failed
                break
            if isinstance(item, BaseException):
                raise item
            if item is _END:
                put(inferred, _END)
                break
            if isinstance(item, tuple):
                if stop is not None and stop.is_set():
                    raise ClipInterrupted(
                        f"{label}: interrupted at frame {frames + 1}; nothing written"
                    )
                frame, tensor = item
                if session is not None:
                    with clock("inference"):
                        item = (frame, session.run(tensor))
                frames += 1
            if not put(inferred, item):
                break
        encoder.join()
    except BaseException:
        abort.set()
        raise
    finally:
        abort.set()
        decoder.join()
        encoder.join()
    if listener is not None:
        listener(label, 0, expected)  # this clip is done (0 frames: clear the display)
    if failures:
        failure = failures[0]
        if isinstance(failure, InputError):
            raise failure
        if type(failure).__module__.startswith("av."):  # FFmpeg refused a frame or packet
            raise InputError(f"{label}: cannot encode: {failure}") from None
        if isinstance(failure, OSError):
            raise InputError(f"{label}: cannot write: {failure.strerror or failure}") from None
        raise failure  # the runner's own (an abort), or a bug: reported as an internal error
    return written


def _get(q: queue.Queue, abort: threading.Event) -> Any:
    """The next item, or None once ``abort`` is set."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if abort.is_set():
                return None


class _MaskStore:
    """Masks spilled to a temporary file as PNG, read back in the same order."""

    def __enter__(self) -> _MaskStore:
        self.file = tempfile.TemporaryFile(prefix="rmcli-masks-")
        self.sizes: list[int] = []
        self.read_index = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def add(self, mask: Image.Image) -> None:
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG", compress_level=1)
        self.file.write(buffer.getvalue())
        self.sizes.append(len(buffer.getvalue()))

    def next(self) -> Image.Image:
        from PIL import Image

        if self.read_index == 0:
            self.file.seek(0)
        size = self.sizes[self.read_index]
        self.read_index += 1
        image = Image.open(io.BytesIO(self.file.read(size)))
        image.load()
        return image
