"""The Python API: ``Remover(model=..., backend=..., **settings)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.families import model_for
from rmcli.imaging import ImageSource, load_image
from rmcli.monitor import Recorder, SessionStats
from rmcli.pipeline import Clock, untimed
from rmcli.plugins import get_backend
from rmcli.session import LoadedSession, get_session
from rmcli.settings import Settings, resolve

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.batch import Result


class Remover:
    """Removes backgrounds with one model on one backend; sessions are shared process-wide.

    Keyword arguments are settings (see ``rmcli config list``) and override environment
    variables and the config file.
    """

    def __init__(
        self,
        model: str | None = None,
        backend: str | None = None,
        *,
        settings: Settings | None = None,
        **values: Any,
    ) -> None:
        given = {"model": model, "backend": backend, **values}
        if settings is None:
            flags = {k: (v, f"Remover({k}=...)") for k, v in given.items() if v is not None}
            settings = resolve(flags)
        else:
            settings = settings.with_values(
                "Remover()", **{k: v for k, v in given.items() if v is not None}
            )
        self.settings = settings
        self.model = model_for(settings)
        self.backend = get_backend(settings["backend"])
        self._recorder = Recorder(self.model.name, self.backend.name)
        self._session: LoadedSession | None = None

    @property
    def session(self) -> LoadedSession:
        """The (process-wide cached) ONNX Runtime session this remover runs on."""
        if self._session is None:  # settings never change: look it up once, not per image
            self._session = get_session(self.model, self.backend, self.settings)
        return self._session

    def mask(self, image: ImageSource) -> Image.Image:
        """The 8-bit mask ("L") of ``image`` (path, bytes, PIL image or ndarray)."""
        return self.mask_of(self.load(image))

    def remove(self, image: ImageSource, *, fmt: str = "png", **options: Any) -> Image.Image:
        """The RGBA cut-out of ``image`` with straight colour and alpha = mask.

        ``options`` are the fields of :class:`rmcli.compose.ComposeOptions` (``only_mask``,
        ``bgcolor``, ``bg_image``, ``premultiplied``, ``crop``, ``crop_margin``,
        ``crop_threshold``, ``alpha_matting`` and its thresholds, ``post_process_mask``);
        unset ones come from the settings. ``fmt="jpg"`` flattens onto ``bgcolor`` or white.
        The result's ``info`` holds the source's ICC profile and EXIF for saving.
        """
        from rmcli.compose import ComposeOptions, compose

        compose_options = ComposeOptions.from_settings(self.settings, **options)
        loaded = self.load(image)
        return compose(loaded, self.mask_of(loaded), compose_options, fmt)

    def load(self, image: ImageSource) -> Image.Image:
        """``image`` decoded and upright, refused over the ``max_pixels`` setting."""
        return load_image(image, max_pixels=self.settings["max_pixels"])

    def mask_of(self, image: Image.Image, clock: Clock = untimed) -> Image.Image:
        """The mask of an already loaded, upright PIL image.

        ``clock(stage)`` wraps the preprocess, inference and postprocess stages.
        """
        session = self.session
        with self._recorder.measure():
            with clock("preprocess"):
                tensor = self.model.preprocess(image)
            with clock("inference"):
                outputs = session.run(tensor)
            with clock("postprocess"):
                return self.model.to_mask(outputs, image.size)

    def stats(self) -> SessionStats:
        """Records of the masks computed so far: count, mean/median/p90 latency, CPU time."""
        return self._recorder.snapshot()

    def reset_stats(self) -> None:
        """Start the records afresh (e.g. after a warm-up image)."""
        self._recorder.reset()

    def map(
        self,
        inputs: Iterable[str | Path],
        output: str | Path | None = None,
        *,
        executor: str | None = None,
        recursive: bool = False,
        **options: Any,
    ) -> Iterator[Result]:
        """Cut out every input (file, folder, glob or URL) and write it to ``output``.

        ``output`` is a folder or storage URL (default: ``<name>.out.png`` beside each input).
        Yields one :class:`rmcli.batch.Result` per input as it finishes, in completion order;
        ``result.error`` says why an input failed. ``executor`` overrides the setting;
        ``options`` are output options as for :meth:`remove`.
        """
        from rmcli.batch import OutputOptions
        from rmcli.compose import ComposeOptions, check_options
        from rmcli.inputs import plan_jobs
        from rmcli.plugins import get_executor

        settings = self.settings
        compose_options = ComposeOptions.from_settings(settings, **options)
        check_options(compose_options)
        output_options = OutputOptions(
            fmt=settings["output_format"],
            png_compression=settings["png_compression"],
            compose=compose_options,
        )
        jobs = plan_jobs([str(item) for item in inputs], output, output_options.fmt, recursive)
        runner = get_executor(executor or settings["executor"])
        for _, result in runner.run(self, jobs, output_options):
            yield result
