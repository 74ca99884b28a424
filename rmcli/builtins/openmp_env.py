"""openmp-env: exactly what rembg 2.0.86 builds, kept as the baseline that ``bench`` compares to.

rembg (``new_session`` and ``BaseSession``) starts from a default ``SessionOptions``; when
``OMP_NUM_THREADS`` is set it copies it into both ``intra_op_num_threads`` and
``inter_op_num_threads`` (inter-op threads do nothing in the default sequential mode). Providers:
CUDA when ``get_device()`` is GPU and CUDA is available, else ROCm, else OpenVINO, else CPU; it
warns when an accelerator was asked for but the session runs on the CPU. No affinity, no other
option. The PyPI onnxruntime has no OpenMP, so the variable only works through this copy.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Any

from rmcli import hookimpl
from rmcli.backends import Backend, provider_name
from rmcli.errors import ConfigError
from rmcli.plugins import warn
from rmcli.settings import Settings

ACCELERATED_BUILDS = ("onnxruntime-gpu", "onnxruntime-rocm", "onnxruntime-openvino")


class OpenmpEnv(Backend):
    name = "openmp-env"
    summary = "Legacy rembg 2.0.86 set-up: both thread counts from OMP_NUM_THREADS, else defaults"

    def threads(self) -> int | None:
        """``int(OMP_NUM_THREADS)`` when the variable is set (as rembg), else None."""
        if "OMP_NUM_THREADS" not in os.environ:
            return None
        raw = os.environ["OMP_NUM_THREADS"]
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(
                f"OMP_NUM_THREADS={raw!r} is not a thread count (backend openmp-env reads it "
                "like rembg 2.0.86; 0 means ONNX Runtime's default)"
            )
        return value

    def session_options(self, settings: Settings):
        import onnxruntime as ort

        options = ort.SessionOptions()
        threads = self.threads()
        if threads is not None:
            if options.inter_op_num_threads == 0:
                options.inter_op_num_threads = threads
            if options.intra_op_num_threads == 0:
                options.intra_op_num_threads = threads
        return options

    def providers(self, settings: Settings) -> list:
        if not any(_installed(name) for name in ACCELERATED_BUILDS):
            return ["CPUExecutionProvider"]  # what rembg picks on the CPU build of onnxruntime
        import onnxruntime as ort

        device, available = ort.get_device(), ort.get_available_providers()
        if device == "GPU" and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device[0:3] == "GPU" and "ROCMExecutionProvider" in available:
            return ["ROCMExecutionProvider", "CPUExecutionProvider"]
        if "OpenVINOExecutionProvider" in available:
            return ["OpenVINOExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def describe(self, settings: Settings) -> dict[str, Any]:
        threads = self.threads()
        default = "ORT default (one per physical core, pinned)"
        return {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "intra_threads": threads or default,
            "inter_threads": threads or "ORT default (unused in sequential mode)",
            "affinity": "none set" if threads else "ORT pins its workers itself",
        }


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@hookimpl
def register_backends(register):
    register(OpenmpEnv())


@hookimpl
def session_created(session, plan):
    """rembg's warning when an accelerator was requested but the session runs on the CPU."""
    if plan.backend.name != OpenmpEnv.name:
        return
    names = [provider_name(p) for p in plan.providers]
    wanted = [p for p in names if p != "CPUExecutionProvider"]
    if wanted and not [p for p in session.get_providers() if p != "CPUExecutionProvider"]:
        warn(
            f"{', '.join(wanted)} was requested but the session runs on the CPU: ONNX Runtime "
            "could not load the provider (see its message above)"
        )
