"""The Python API: ``Remover(model=..., backend=..., **settings)``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.config.settings import SETTINGS, Layer, Setting, Settings, resolve
from rmcli.contracts.clock import Clock, untimed
from rmcli.engine.families import custom_model
from rmcli.engine.precision import check_precision
from rmcli.engine.registry import get_backend, get_model
from rmcli.engine.session import SESSIONS, LoadedSession, build_session, session_key
from rmcli.engine.stats import Recorder, SessionStats
from rmcli.images.imaging import ImageSource, load_image
from rmcli.images.stages import decode_and_mask

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.contracts.jobs import Result
    from rmcli.contracts.model import Model
    from rmcli.contracts.threads import ThreadLayout


def _bounded(setting: Setting) -> bool:
    return setting.minimum is not None or setting.maximum is not None


def model_for(settings: Mapping[str, Any]) -> Model:
    """The model the settings ask for: ``model_path`` (custom weights) wins over ``model``."""
    if settings.get("model_path"):
        return custom_model(settings["model_path"], settings.get("model_family") or "")
    source = settings.source("model") if hasattr(settings, "source") else ""
    return get_model(settings["model"], source).configure(settings)


class Remover:
    """Removes backgrounds with one model on one backend; sessions are shared process-wide.

    Keyword arguments are settings (see ``rmcli config list``) and override environment
    variables and the config file. ``cores`` sizes the thread layout for that many cores
    instead of the usable ones (a Dask worker's threads, a service's inference slot).
    """

    def __init__(
        self,
        model: str | None = None,
        backend: str | None = None,
        *,
        settings: Settings | None = None,
        cores: int | None = None,
        **values: Any,
    ) -> None:
        given = {"model": model, "backend": backend, **values}
        if settings is None:
            flags = {k: (v, f"Remover({k}=...)") for k, v in given.items() if v is not None}
            settings = resolve(flags, flags_layer=Layer.API)
        else:
            settings = settings.with_values(
                "Remover()", **{k: v for k, v in given.items() if v is not None}
            )
        self.settings = settings
        self.cores = cores
        self.model = model_for(settings)
        self.backend = get_backend(settings["backend"], settings.source("backend"))
        check_precision(self.backend, settings)  # before any work, whatever the executor
        self._recorder = Recorder(self.model.name, self.backend.name)
        self.session_key = session_key(self.model, self.backend, settings, cores)
        self._layout: ThreadLayout | None = None

    @property
    def session(self) -> LoadedSession:
        """The ONNX Runtime session this remover runs on, from the process's session cache
        (built on first use; built again if the cache dropped it)."""
        loaded = SESSIONS.get(
            self.session_key,
            lambda: build_session(self.model, self.backend, self.settings, self.cores),
        )
        self._layout = loaded.layout
        return loaded

    @property
    def layout(self) -> ThreadLayout:
        """The thread layout: its session's once it has one, else resolved (once) without
        building it (what a remote executor's workers would start from)."""
        if self._layout is None:
            from rmcli.engine.layout import resolve_layout

            self._layout = resolve_layout(self.settings, self.backend, cores=self.cores)
        return self._layout

    def mask(self, image: ImageSource) -> Image.Image:
        """The 8-bit mask ("L") of ``image`` (path, bytes, PIL image or ndarray)."""
        return decode_and_mask(self, image)[1]

    def remove(self, image: ImageSource, *, fmt: str = "png", **options: Any) -> Image.Image:
        """The RGBA cut-out of ``image`` with straight colour and alpha = mask.

        ``options`` are the fields of :class:`rmcli.ComposeOptions` (``only_mask``,
        ``bgcolor``, ``bg_image``, ``premultiplied``, ``crop``, ``crop_margin``,
        ``crop_threshold``, ``alpha_matting`` and its thresholds, ``post_process_mask``);
        unset ones come from the settings. ``fmt="jpg"`` flattens onto ``bgcolor`` or white.
        The result's ``info`` holds the source's ICC profile and EXIF for saving.
        """
        from rmcli.contracts.output import ComposeOptions
        from rmcli.images.compose import compose

        options = self._checked(options, "remove")
        compose_options = ComposeOptions.from_settings(self.settings, **options)
        return compose(*decode_and_mask(self, image), compose_options, fmt)

    def _checked(self, options: dict[str, Any], method: str) -> dict[str, Any]:
        """``options`` with each numeric one parsed and held to the settings table's bounds,
        as the command line and the config file are: a :class:`ConfigError` names the bad one.
        """
        numeric = {
            key: value
            for key, value in options.items()
            if value is not None and key in SETTINGS and _bounded(SETTINGS[key])
        }
        checked = self.settings.with_values(f"Remover.{method}()", **numeric)
        return {**options, **{key: checked[key] for key in numeric}}

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
        Yields one :class:`rmcli.Result` per input, in input order; ``result.error`` says why
        an input failed. ``executor`` overrides the setting; ``options`` are output options
        as for :meth:`remove`. See :class:`rmcli.Batch` for counts and stats.
        """
        from rmcli.contracts.output import OutputOptions
        from rmcli.engine.runner import Batch

        batch = Batch(
            self,
            list(inputs),
            output,
            recursive=recursive,
            options=OutputOptions.from_settings(self.settings, **self._checked(options, "map")),
            executor=executor,
        )
        yield from batch.run()
