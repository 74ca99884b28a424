"""pymatting's kernels compiled ahead, in a low-priority child process, when the service starts."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time

log = logging.getLogger("rmcli.serve")


class MattingWarmUp:
    """pymatting's numba kernels compiled ahead into numba's cache, once per server start, in a
    child process at the lowest CPU priority (a cold compile takes minutes and would hold this
    process's GIL). Matting requests get 503 until it is done; the first one then loads the
    kernels from the cache (seconds)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error = ""
        self._child: subprocess.Popen | None = None
        self._stopped = False

    def start(self) -> None:
        import importlib.util

        if importlib.util.find_spec("pymatting") is None:
            self.done.set()  # matting requests get the install hint instead
            return
        log.info(
            "alpha matting: compiling pymatting's kernels (numba; the first start on a machine "
            "takes minutes); matting requests get 503 until then"
        )
        threading.Thread(target=self._compile, name="rmcli-matting-warmup", daemon=True).start()

    def _compile(self) -> None:
        started = time.perf_counter()
        try:
            code = "from rmcli.images.matting import warm_matting; warm_matting()"
            self._child = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, self._child.pid, 19)
            _, errors = self._child.communicate()
            if self._stopped:
                return
            if self._child.returncode != 0:
                last = (errors.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                raise RuntimeError(f"compiling failed: {last}")
            log.info("alpha matting ready (compiled in %.1f s)", time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - reported to matting requests
            self.error = f"alpha matting is unavailable: {exc}"
            log.error("%s", self.error)
        finally:
            self.done.set()

    def stop(self) -> None:
        """End a compile still running (the server stops)."""
        self._stopped = True
        if self._child is not None and self._child.poll() is None:
            self._child.kill()

    def unready(self) -> str | None:
        """Why matting cannot run now, or None."""
        if not self.done.is_set():
            return "alpha matting is not ready yet: its kernels are being compiled; retry later"
        return self.error or None
