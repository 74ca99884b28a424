"""openmp-env: exactly what rembg 2.0.86 builds, kept as the baseline that ``bench`` compares to.

rembg (``new_session`` and ``BaseSession``) starts from a default ``SessionOptions``; when
``OMP_NUM_THREADS`` is set it copies it into both ``intra_op_num_threads`` and
``inter_op_num_threads`` (inter-op threads do nothing in the default sequential mode). Providers:
CUDA when ``get_device()`` is GPU and CUDA is available, else ROCm, else OpenVINO, else CPU; it
warns when an accelerator was asked for but the session runs on the CPU. No affinity, no other
option. The PyPI onnxruntime has no OpenMP, so the variable only works through this copy.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from importlib import metadata
from typing import Any

from rmcli.config.settings import Settings
from rmcli.contracts.backend import Backend, provider_name
from rmcli.contracts.threads import ThreadLayout
from rmcli.errors import ConfigError
from rmcli.hookspecs import hookimpl

log = logging.getLogger(__name__)

ACCELERATED_BUILDS = ("onnxruntime-gpu", "onnxruntime-rocm", "onnxruntime-openvino")
NOT_HONOURED = "it takes both thread counts from OMP_NUM_THREADS, like rembg 2.0.86"


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

    def adjust_layout(self, layout: ThreadLayout, settings: Settings) -> ThreadLayout:
        """rembg's: OMP_NUM_THREADS in both counts (0 or unset: ORT's defaults), nothing else."""
        threads = self.threads() or None
        layout = replace(
            layout,
            intra_threads=threads,
            inter_threads=threads,
            execution_mode=None,
            spinning=None,
            worker_cpus=(),
            caller_cpus=(),
            intra_from="backend",
        )
        for key in ("intra_threads", "inter_threads", "cpu_binding", "execution_mode"):
            layout = layout.ignore(key, NOT_HONOURED)
        return layout.ignore("allow_spinning", "rembg leaves spinning to ONNX Runtime")

    def session_options(self, settings: Settings):
        import onnxruntime as ort

        return ort.SessionOptions()

    def providers(self, settings: Settings, layout: ThreadLayout) -> list:
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

    def check_session(self, session: Any, plan: Any) -> None:
        """rembg's warning when an accelerator was requested but the session runs on the CPU."""
        names = [provider_name(p) for p in plan.providers]
        wanted = [p for p in names if p != "CPUExecutionProvider"]
        if wanted and not [p for p in session.get_providers() if p != "CPUExecutionProvider"]:
            log.warning(
                f"{', '.join(wanted)} was requested but the session runs on the CPU: ONNX "
                "Runtime could not load the provider (see its message above)"
            )

    def describe(self, settings: Settings) -> dict[str, Any]:
        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@hookimpl
def register_backends(register):
    register(OpenmpEnv())
