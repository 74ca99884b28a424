"""openmp-env: the legacy rembg behaviour, kept as the baseline that ``bench`` compares against."""

from __future__ import annotations

import os
from typing import Any

from rmcli import hookimpl
from rmcli.backends import Backend
from rmcli.settings import Settings


class OpenmpEnv(Backend):
    name = "openmp-env"
    summary = "Legacy baseline: both thread counts from OMP_NUM_THREADS, else ORT defaults"

    def threads(self) -> int | None:
        raw = os.environ.get("OMP_NUM_THREADS", "")
        return int(raw) if raw.isdigit() else None

    def session_options(self, settings: Settings):
        import onnxruntime as ort

        options = ort.SessionOptions()  # exactly what rembg 2.0.86 builds
        threads = self.threads()
        if threads is not None:
            options.inter_op_num_threads = threads
            options.intra_op_num_threads = threads
        return options

    def describe(self, settings: Settings) -> dict[str, Any]:
        threads = self.threads()
        return {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "intra_threads": threads if threads is not None else "ORT default (physical cores)",
            "inter_threads": threads if threads is not None else "ORT default",
        }


@hookimpl
def register_backends(register):
    register(OpenmpEnv())
