"""Model families: the Model subclasses behind the catalogue, and custom weights by family.

Every family pre-processes like rembg (:meth:`rmcli.Model.preprocess`); they differ in
input size, normalisation and how the network's output becomes one mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli.contracts.model import IMAGENET_MEAN, IMAGENET_STD, Model, Weights, stretched_mask
from rmcli.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class ClippedU2netModel(Model):
    """u2net: like u2netp, but rembg clips the stretched prediction to [0, 1] before x255."""

    def to_mask(self, outputs: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
        return stretched_mask(outputs[0][:, 0], size, clip=True)


@dataclass(frozen=True)
class BiRefNetModel(Model):
    """BiRefNet: the first output holds logits; rembg applies a sigmoid, then min-max."""

    input_size: tuple[int, int] = (1024, 1024)
    family: str = "birefnet"

    def to_mask(self, outputs: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
        import numpy as np

        logits = outputs[0][:, 0]
        return stretched_mask(1 / (1 + np.exp(-logits)), size)


CLOTH_CATEGORIES: dict[str, tuple[int, ...]] = {
    "upper": (1,),
    "lower": (2,),
    "full": (3,),
    "attire": (1, 2, 3),
}


@dataclass(frozen=True)
class ClothSegModel(Model):
    """u2net_cloth_seg: per-pixel classes 0 background, 1 upper, 2 lower, 3 full-body clothes.

    rembg returns one mask per category and stacks the cut-outs vertically; rmcli gives one
    mask per image, for ``category`` (setting ``cloth_category``): upper, lower, full or
    attire (all three; the default). The class map is LANCZOS-resized to the image size
    before the category is picked, exactly as rembg does.
    """

    input_size: tuple[int, int] = (768, 768)
    family: str = "u2net_cloth_seg"
    category: str = "attire"

    def configure(self, settings: Mapping[str, Any]) -> Model:
        category = settings.get("cloth_category") or self.category
        if category not in CLOTH_CATEGORIES:
            raise UsageError(
                f"cloth category {category!r} is not one of {', '.join(CLOTH_CATEGORIES)}"
            )
        return replace(self, category=category)

    def to_mask(self, outputs: list[np.ndarray], size: tuple[int, int]) -> Image.Image:
        import numpy as np
        from PIL import Image

        classes = np.argmax(outputs[0], axis=1)[0].astype(np.uint8)
        resized = Image.fromarray(classes, mode="L").resize(size, Image.Resampling.LANCZOS)
        wanted = np.zeros(256, dtype=np.uint8)  # rembg's palettes: index -> 0 or 255
        wanted[list(CLOTH_CATEGORIES[self.category])] = 255
        return resized.point(wanted.tolist())


ISNET_MEAN = (0.5, 0.5, 0.5)
UNIT_STD = (1.0, 1.0, 1.0)

# --model-family for custom weights, as rembg's u2net_custom, dis_custom and BiRefNet sessions
FAMILIES: dict[str, dict[str, Any]] = {
    "u2net": {"cls": Model, "input_size": (320, 320), "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "isnet": {"cls": Model, "input_size": (1024, 1024), "mean": ISNET_MEAN, "std": UNIT_STD},
    "birefnet": {"cls": BiRefNetModel, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}


def custom_model(path: str | Path, family: str) -> Model:
    """A model for a local ONNX file of a known family, used in place with no checksum."""
    if family not in FAMILIES:
        raise UsageError(
            f"--model-path needs --model-family, one of {', '.join(FAMILIES)} (got {family!r})"
        )
    spec = dict(FAMILIES[family])
    cls = spec.pop("cls")
    file = Path(path).expanduser().resolve()
    weights = Weights(filename=file.name, path=str(file))
    summary = f"custom {family}-family weights {file}"
    return cls(name=f"custom:{file}", summary=summary, weights=weights, family=family, **spec)


CUSTOM_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"


def registered_model(name: str, spec: Mapping[str, Any]) -> Model:
    """The model of a ``[models.NAME]`` table (``rmcli models add``): ``family``, ``path`` or
    ``url``, optional ``sha256``, ``input_size`` [w, h], ``mean`` and ``std`` [r, g, b]."""
    import re

    if not re.fullmatch(CUSTOM_NAME, name):
        raise UsageError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' (64 at most), "
            "starting with a letter or digit"
        )
    family = spec.get("family")
    if family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; one of {', '.join(FAMILIES)}")
    values = dict(FAMILIES[family])
    cls = values.pop("cls")
    for key, length in (("input_size", 2), ("mean", 3), ("std", 3)):
        if key in spec:
            values[key] = _numbers(spec[key], key, length, int if key == "input_size" else float)
    path, url = spec.get("path"), spec.get("url")
    if bool(path) == bool(url) or not isinstance(path or url, str):
        raise UsageError("needs either a path or a url (text), not both")
    try:
        if path:
            weights = Weights(filename=Path(path).name, path=path, sha256=spec.get("sha256", ""))
        else:
            weights = Weights(f"custom-{name}.onnx", urls=(url,), sha256=spec.get("sha256", ""))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    summary = f"custom {family}-family model ({path or url})"
    return cls(
        name=name,
        summary=summary,
        weights=weights,
        family=family,
        **values,
    )


def _numbers(raw: Any, key: str, length: int, kind: type) -> tuple:
    if (
        not isinstance(raw, list | tuple)
        or len(raw) != length
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw)
        or (kind is int and not all(isinstance(x, int) and 16 <= x <= 8192 for x in raw))
        or (key == "std" and not all(x > 0 for x in raw))
    ):
        what = "whole numbers from 16 to 8192" if kind is int else "numbers"
        raise UsageError(f"{key} must be {length} {what}, not {raw!r}")
    return tuple(kind(x) for x in raw)
