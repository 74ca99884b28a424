"""rembg's Python API on rmcli's engine: ``from rmcli.compat import new_session, remove``.

``remove(data, session=..., alpha_matting=..., only_mask=..., post_process_mask=...,
bgcolor=..., force_return_bytes=...)`` behaves like rembg 2.0.86's: bytes in, PNG bytes out;
a PIL image in, a PIL image out; a numpy array in, an array out; colour premultiplied by
alpha as rembg gives it, and RGBA even over an opaque ``bgcolor``. ``new_session(name)``
takes rembg's model names, including the custom sessions ``u2net_custom``, ``dis_custom``
and ``ben_custom`` with ``model_path=...``. rmcli's own API (:class:`rmcli.Remover`) keeps
rmcli's defaults (straight colour, RGB over an opaque background).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rmcli.contracts.output import ComposeOptions
from rmcli.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.engine.remover import Remover

# rembg's custom sessions: session name -> rmcli model family (same pre/post-processing)
CUSTOM_SESSIONS = {"u2net_custom": "u2net", "dis_custom": "isnet", "ben_custom": "isnet"}

# rembg's remove() keywords that shape the cut-out (rembg_options takes them)
COMPOSE_KEYWORDS = (
    "alpha_matting",
    "alpha_matting_foreground_threshold",
    "alpha_matting_background_threshold",
    "alpha_matting_erode_size",
    "only_mask",
    "post_process_mask",
    "bgcolor",
)
# all of rembg's remove() keywords; its commands pass them to new_session() too, which ignores them
REMOVE_KEYWORDS = frozenset(
    {*COMPOSE_KEYWORDS, "force_return_bytes", "decontaminate", "vitmatte", "vitmatte_model"}
)


class Session:
    """What :func:`new_session` returns: one model, like rembg's ``BaseSession``."""

    def __init__(self, model_name: str, remover: Remover) -> None:
        self.model_name = model_name
        self.remover = remover

    def predict(self, img: Image.Image, *args: Any, **kwargs: Any) -> list[Image.Image]:
        """The masks ("L") of an upright PIL image: one, as rembg's sessions give."""
        return [self.remover.mask_of(img)]

    def __repr__(self) -> str:
        return f"Session({self.model_name!r}, model={self.remover.model.name!r})"


def new_session(model_name: str | None = None, *args: Any, **kwargs: Any) -> Session:
    """A session for rembg's ``model_name``; ``*_custom`` sessions need ``model_path=FILE``.

    Without a name: rmcli's ``model`` setting (u2netp unless configured; rembg: bria-rmbg).

    rembg's ``remove()`` keywords are accepted and ignored (rembg's commands pass them here
    too); other keywords (``sess_opts``, ``providers``) are refused: rmcli sets the session
    up from its settings (``RMCLI_BACKEND``, ``RMCLI_THREADS``, ...).
    """
    from rmcli.engine.remover import Remover

    unsupported = sorted(set(kwargs) - REMOVE_KEYWORDS - {"model_path"})
    if unsupported or args:
        what = ", ".join(unsupported) or "positional arguments"
        raise UsageError(f"new_session(): {what} not supported by rmcli.compat")
    family = CUSTOM_SESSIONS.get(model_name or "")
    if family is not None:
        path = kwargs.get("model_path")
        if not path:
            raise UsageError(f'{model_name} needs model_path (-x \'{{"model_path": "FILE"}}\')')
        return Session(model_name, Remover(model_path=str(path), model_family=family))
    remover = Remover(model=model_name)
    return Session(model_name or remover.model.name, remover)


def rembg_options(
    *,
    alpha_matting: bool = False,
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    only_mask: bool = False,
    post_process_mask: bool = False,
    bgcolor: Any = None,
    settings: Mapping[str, Any] | None = None,
) -> ComposeOptions:
    """rembg's composition: its defaults (not rmcli's settings), premultiplied colour, RGBA
    kept over an opaque ``bgcolor``. Only the matting pixel limit comes from ``settings``."""
    limit = {"matting_max_pixels": settings["matting_max_pixels"]} if settings else {}
    try:
        options = ComposeOptions(
            only_mask=bool(only_mask),
            bgcolor=bgcolor,
            premultiplied=True,
            keep_alpha=True,
            alpha_matting=bool(alpha_matting),
            alpha_matting_foreground_threshold=int(alpha_matting_foreground_threshold),
            alpha_matting_background_threshold=int(alpha_matting_background_threshold),
            alpha_matting_erode_size=int(alpha_matting_erode_size),
            post_process_mask=bool(post_process_mask),
            **limit,
        )
    except (TypeError, ValueError) as exc:  # e.g. a threshold that is not a number
        raise UsageError(f"bad rembg option: {exc}") from None
    return options.checked()


_default_session: Session | None = None


def remove(
    data: Any,
    alpha_matting: bool = False,
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    session: Session | None = None,
    only_mask: bool = False,
    post_process_mask: bool = False,
    decontaminate: bool = False,
    vitmatte: bool = False,
    vitmatte_model: str | None = None,
    bgcolor: tuple[int, int, int, int] | None = None,
    force_return_bytes: bool = False,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """rembg 2.0.86's ``remove``: ``data`` is bytes, a PIL image or a numpy array; the
    result is of the same kind (PNG bytes for bytes, or with ``force_return_bytes``).

    Without ``session``: one made once from rmcli's ``model`` setting. ``decontaminate``
    and ``vitmatte`` are rembg-only (a UsageError); ``alpha_matting`` refines edges.
    """
    import numpy as np
    from PIL import Image

    from rmcli.images.compose import compose
    from rmcli.images.stages import decode_and_mask

    global _default_session
    if decontaminate or vitmatte:
        name = "decontaminate" if decontaminate else "vitmatte"
        raise UsageError(
            f"{name} is rembg-only: rmcli does not support it; alpha_matting refines edges"
        )
    if isinstance(data, bytes) or force_return_bytes:
        kind = "bytes"
    elif isinstance(data, Image.Image):
        kind = "pillow"
    elif isinstance(data, np.ndarray):
        kind = "ndarray"
    else:
        raise UsageError(
            f"input type {type(data).__name__} is not supported (bytes, PIL image or "
            "numpy array; or force_return_bytes=True)"
        )
    putalpha = bool(kwargs.pop("putalpha", False))  # rembg: straight colour
    kwargs.pop("model_path", None)  # rembg's commands pass new_session()'s keywords here too
    if kwargs or args:
        what = ", ".join(sorted(kwargs)) or "positional arguments"
        raise UsageError(f"remove(): {what} not supported by rmcli.compat")
    if session is None:
        if _default_session is None:
            _default_session = new_session()
        session = _default_session
    remover = session.remover
    options = rembg_options(
        alpha_matting=alpha_matting,
        alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=alpha_matting_background_threshold,
        alpha_matting_erode_size=alpha_matting_erode_size,
        only_mask=only_mask,
        post_process_mask=post_process_mask,
        bgcolor=bgcolor,
        settings=remover.settings,
    )
    if putalpha:
        options = replace(options, premultiplied=False)
    result = compose(*decode_and_mask(remover, data), options)
    if kind == "pillow":
        return result
    if kind == "ndarray":
        return np.asarray(result)
    buffer = io.BytesIO()
    result.save(buffer, "PNG")
    return buffer.getvalue()


__all__ = ["CUSTOM_SESSIONS", "Session", "new_session", "remove", "rembg_options"]
