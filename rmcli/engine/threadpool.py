"""One ONNX Runtime thread pool shared by every session of the process (``shared_threadpool``).

ORT accepts ``set_global_thread_pool_sizes`` once per process; after that every session must
set ``use_per_session_threads = False``, and per-session thread counts, affinities and spinning
entries no longer apply. Sessions without the setting cannot be built in that process any more.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rmcli.contracts.threads import ThreadLayout
from rmcli.errors import BackendError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_sizes: tuple[int, int] | None = None


def apply(options: Any, layout: ThreadLayout, shared: bool) -> None:
    """Make ``options`` (an ``ort.SessionOptions``) use the shared pool, creating it once.

    The pool is sized from the first shared session's layout (an ORT default becomes the
    usable cores). Raises :class:`BackendError` when a session without the setting is built
    after the shared pool exists (ORT would refuse it with a cryptic error).
    """
    global _sizes
    with _lock:
        if not shared:
            if _sizes is not None:
                raise BackendError(
                    "this process already shares one thread pool (shared_threadpool=true for an "
                    "earlier session); ONNX Runtime then refuses sessions with their own pools: "
                    "set shared_threadpool=true for every session of the process"
                )
            return
        import onnxruntime as ort

        wanted = (layout.intra_threads or layout.usable_cpus, layout.inter_threads or 1)
        if _sizes is None:
            ort.set_global_thread_pool_sizes(*wanted)
            _sizes = wanted
        elif wanted != _sizes:
            log.warning(
                f"the shared thread pool already has {_sizes[0]} intra-op and {_sizes[1]} "
                f"inter-op threads; this session asked for {wanted[0]}/{wanted[1]} and shares it"
            )
        options.use_per_session_threads = False
