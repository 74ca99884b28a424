"""cuda-hybrid: CUDA first, a small non-spinning CPU pool for the nodes CUDA cannot run.

ONNX Runtime's provider list is a precedence order with per-node fallback. When the CUDA
libraries cannot load, ORT only logs and builds a CPU-only session, and
``get_available_providers()`` still lists CUDA: only ``session.get_providers()`` tells the truth.
So this backend checks it after building and warns with the reason, or raises when
``strict_device`` is set.
"""

from __future__ import annotations

import ctypes
from importlib import metadata
from pathlib import Path
from typing import Any

from rmcli import hookimpl
from rmcli.backends import Backend, base_options, provider_name
from rmcli.cpus import usable_cpu_count
from rmcli.errors import BackendError
from rmcli.plugins import warn
from rmcli.settings import Settings

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INSTALL_HINT = "pip install 'rmcli[gpu]'"
CPU_THREADS = 2  # the CPU only runs the few nodes CUDA cannot; more threads would just spin


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

    def cpu_threads(self, settings: Settings) -> int:
        threads = settings["intra_threads"]
        if isinstance(threads, int):
            return threads
        return min(CPU_THREADS, usable_cpu_count())

    def session_options(self, settings: Settings):
        options = base_options(settings)
        options.intra_op_num_threads = self.cpu_threads(settings)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return options

    def providers(self, settings: Settings) -> list:
        cuda_options: dict[str, Any] = {
            "device_id": settings["device_id"],
            "arena_extend_strategy": "kSameAsRequested",
            "cudnn_conv_algo_search": "HEURISTIC",  # no slow exhaustive search on the 1st run
        }
        if settings["gpu_mem_limit"]:
            cuda_options["gpu_mem_limit"] = settings["gpu_mem_limit"] * 1024 * 1024
        return [(CUDA, cuda_options), CPU]

    def describe(self, settings: Settings) -> dict[str, Any]:
        return {
            "providers": self.providers(settings),
            "cpu_intra_threads": self.cpu_threads(settings),
            "cpu_spinning": False,
            "strict_device": settings["strict_device"],
        }


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


def _is_mine(plan) -> bool:
    return plan.backend.name == CudaHybrid.name


def _refuse_or_warn(reason: str, settings: Settings) -> None:
    if settings["strict_device"]:
        raise BackendError(f"cuda-hybrid: CUDA is not used: {reason} (strict_device is set)")
    warn(f"cuda-hybrid: CUDA is not used, running on the CPU: {reason}")


@hookimpl
def register_backends(register):
    register(CudaHybrid())


@hookimpl(trylast=True)
def adjust_session(plan) -> None:
    """Drop CUDA before building when it cannot work (missing build, device out of range)."""
    if not _is_mine(plan):
        return
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        count, problem = cuda_device_count()
        if problem or plan.settings["device_id"] < count:
            return  # let ORT try; session_created checks what it really did
    reason = why_cuda_is_off(plan.settings)
    _refuse_or_warn(reason, plan.settings)
    plan.providers = [p for p in plan.providers if provider_name(p) != CUDA]


@hookimpl
def session_created(session, plan) -> None:
    """The truth: if CUDA was asked for but is not among the session's providers, say why."""
    if not _is_mine(plan):
        return
    asked = any(provider_name(p) == CUDA for p in plan.providers)
    if asked and CUDA not in session.get_providers():
        _refuse_or_warn(why_cuda_is_off(plan.settings), plan.settings)
