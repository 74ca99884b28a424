"""cuda-hybrid: CUDA first, a small non-spinning CPU pool for the nodes CUDA cannot run.

ONNX Runtime's provider list is a precedence order with per-node fallback. When the CUDA
libraries cannot load, ORT only logs and builds a CPU-only session, and
``get_available_providers()`` still lists CUDA: only ``session.get_providers()`` tells the truth.
So this backend checks it after building and warns with the reason, or raises when
``strict_device`` is set.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from rmcli.config.settings import Settings
from rmcli.contracts.backend import Backend
from rmcli.contracts.threads import ThreadLayout
from rmcli.errors import BackendError
from rmcli.extras import pip_install
from rmcli.hookspecs import hookimpl

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INSTALL_HINT = pip_install("gpu")
CPU_THREADS = 2  # the CPU only runs the few nodes CUDA cannot; more threads would just spin
NOT_HONOURED = "the CPU only runs the nodes CUDA cannot, on a small unpinned sequential pool"


class CudaHybrid(Backend):
    name = "cuda-hybrid"
    summary = "CUDA for the model, a small non-spinning CPU pool for nodes CUDA cannot run"
    cpu_fallback = True

    def availability(self) -> tuple[bool, str]:
        """Whether CUDA can be used, checked without importing onnxruntime."""
        version = _version("onnxruntime-gpu")
        if version is None:
            return False, f"onnxruntime-gpu is not installed ({INSTALL_HINT}); runs on the CPU"
        count, problem = cuda_device_count()
        if problem:
            return False, f"{problem}; runs on the CPU"
        return True, f"onnxruntime-gpu {version}, {count} CUDA device(s)"

    def adjust_layout(self, layout: ThreadLayout, settings: Settings) -> ThreadLayout:
        """At most 2 CPU threads unless set explicitly; no spinning, no pinning, sequential."""
        intra = layout.intra_threads or 1
        if layout.intra_from != "setting":
            intra = min(CPU_THREADS, intra)
        layout = replace(
            layout,
            intra_threads=intra,
            inter_threads=1,
            execution_mode="sequential",
            spinning=False,
            worker_cpus=(),
            caller_cpus=(),
            intra_from=layout.intra_from if layout.intra_from == "setting" else "backend",
        )
        for key in ("cpu_binding", "execution_mode", "inter_threads", "allow_spinning"):
            layout = layout.ignore(key, NOT_HONOURED)
        return layout

    def providers(self, settings: Settings, layout: ThreadLayout) -> list:
        """CUDA, then the CPU for the nodes CUDA cannot run. Only the CPU when the driver
        reports fewer devices than ``device_id`` (:meth:`check_session` then says why)."""
        count, problem = cuda_device_count()
        if not problem and settings["device_id"] >= count:
            return [CPU]
        cuda_options: dict[str, Any] = {
            "device_id": settings["device_id"],
            "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC",  # no slow exhaustive search on the 1st run
        }
        if settings["gpu_mem_limit"]:
            cuda_options["gpu_mem_limit"] = settings["gpu_mem_limit"] * 1024 * 1024
        return [(CUDA, cuda_options), CPU]

    def check_session(self, session: Any, plan: Any) -> None:
        """The truth: if CUDA is not among the session's providers, say why."""
        if CUDA not in session.get_providers():
            _refuse_or_warn(why_cuda_is_off(plan.settings), plan.settings)

    def describe(self, settings: Settings) -> dict[str, Any]:
        return {"strict_device": settings["strict_device"], "device_id": settings["device_id"]}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def cuda_device_count() -> tuple[int, str]:
    """CUDA devices the driver reports, and a problem (empty when there is none)."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 not found)"
    if driver.cuInit(0) != 0:
        return 0, "the NVIDIA driver found no usable GPU (cuInit failed)"
    count = ctypes.c_int(0)
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "no CUDA device visible (check CUDA_VISIBLE_DEVICES)"
    return count.value, ""


def why_cuda_is_off(settings: Settings) -> str:
    """The most likely reason CUDA is not active, for the warning or the strict error."""
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        if _version("onnxruntime-gpu") is None:
            return f"onnxruntime-gpu is not installed ({INSTALL_HINT})"
        return (
            "onnxruntime-gpu is installed but the onnxruntime in use has no CUDA provider (the "
            "CPU package onnxruntime overwrote it): pip uninstall -y onnxruntime "
            "onnxruntime-gpu && pip install --no-deps onnxruntime-gpu"
        )
    count, problem = cuda_device_count()
    if problem:
        return problem
    if settings["device_id"] >= count:
        return f"device_id {settings['device_id']} is out of range: {count} CUDA device(s)"
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return f"CUDA libraries missing: {exc}"
    return "ONNX Runtime did not activate CUDA (its log above may say why)"


def _refuse_or_warn(reason: str, settings: Settings) -> None:
    if settings["strict_device"]:
        raise BackendError(f"cuda-hybrid: CUDA is not used: {reason} (strict_device is set)")
    log.warning(f"cuda-hybrid: CUDA is not used, running on the CPU: {reason}")


@hookimpl
def register_backends(register):
    register(CudaHybrid())
