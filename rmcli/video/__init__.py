"""Video and animated images: probe, decode, cut out frame by frame, encode with alpha.

Decoding and encoding go through PyAV (the ``av`` package, whose wheels bundle FFmpeg with
libvpx-vp9, ProRes, x264 and libwebp), an optional extra: ``pip install 'rmcli[video]'``.
Animated GIF and WebP inputs are decoded by Pillow. See ``docs/video.md``.
"""

from __future__ import annotations

from types import ModuleType

from rmcli.errors import UsageError
from rmcli.extras import pip_install

INSTALL_HINT = f"video needs PyAV: {pip_install('video')} (or pip install av)"


def require_av(what: str = "video") -> ModuleType:
    """The ``av`` module; a :class:`UsageError` with the install command when it is missing."""
    try:
        import av
    except ImportError:
        raise UsageError(f"{what}: {INSTALL_HINT}") from None
    return av
