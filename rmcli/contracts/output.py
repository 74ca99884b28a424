"""Output options: how a mask becomes the written image (compose) and how it is written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.colors import Color, parse_color
from rmcli.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ComposeOptions:
    """What the written image looks like. Field names match rembg's ``remove()`` keywords."""

    only_mask: bool = False
    bgcolor: Color | None = None
    bg_image: Path | str | Image.Image | None = (
        None  # a path (checked() makes it a Path) or an image
    )
    premultiplied: bool = False
    keep_alpha: bool = False  # RGBA even over an opaque background, as rembg writes
    crop: bool = False
    crop_margin: int = 0
    crop_threshold: int = 10
    alpha_matting: bool = False
    alpha_matting_foreground_threshold: int = 240
    alpha_matting_background_threshold: int = 10
    alpha_matting_erode_size: int = 10
    matting_max_pixels: int = 1_000_000
    post_process_mask: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **given: Any) -> ComposeOptions:
        """Defaults from resolved ``settings``, then every ``given`` value that is not None."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise UsageError(f"unknown output option(s): {', '.join(unknown)}")
        values = {k: settings[k] for k in names if k in settings}
        values.update({k: v for k, v in given.items() if v is not None})
        options = cls()
        options = replace(options, **values)
        return options.checked()

    def checked(self) -> ComposeOptions:
        """Normalised values (colour parsed, path made a Path); a bad value is a UsageError."""
        bgcolor = self.bgcolor
        if bgcolor is not None and not (isinstance(bgcolor, str) and not bgcolor.strip()):
            try:
                bgcolor = parse_color(bgcolor)
            except ValueError as exc:
                raise UsageError(f"bgcolor {bgcolor!r} {exc}") from None
        else:
            bgcolor = None
        bg_image = self.bg_image
        if isinstance(bg_image, str):
            bg_image = Path(bg_image) if bg_image else None
        if not 0 <= self.crop_threshold <= 254:
            raise UsageError("crop threshold must be between 0 and 254")
        if self.crop_margin < 0:
            raise UsageError("crop margin must be 0 or more")
        return replace(self, bgcolor=bgcolor, bg_image=bg_image)


@dataclass(frozen=True)
class OutputOptions:
    """How results are written: format, PNG level, composition, encoding threads."""

    fmt: str = "png"
    png_compression: int = 1
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    threads: int | None = None  # threads one image may use to encode; None: from the layout

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **compose: Any) -> OutputOptions:
        """Format and PNG level from ``settings``; ``compose`` as for ComposeOptions."""
        return cls(
            fmt=settings["output_format"],
            png_compression=settings["png_compression"],
            compose=ComposeOptions.from_settings(settings, **compose),
        )
