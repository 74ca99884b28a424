"""rmcli: remove image backgrounds with ONNX models, on explicit, measurable CPU/GPU backends.

This module is the stable API for programs and plugins: everything a backend, model or
executor plugin needs is importable from ``rmcli`` itself (see docs/plugins.md). Names are
imported lazily, so ``import rmcli`` stays light (no onnxruntime, numpy or Pillow).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rmcli.errors import (
    BackendError,
    ConfigError,
    InputError,
    ModelError,
    RmcliError,
    UsageError,
)
from rmcli.hookspecs import hookimpl
from rmcli.version import __version__

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.contracts.backend import Backend, Provider, SessionPlan, base_options, provider_name
    from rmcli.contracts.clock import Clock, untimed
    from rmcli.contracts.executor import Executor
    from rmcli.contracts.jobs import Job, Result
    from rmcli.contracts.layout import ThreadLayout
    from rmcli.contracts.model import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        Model,
        Weights,
        WheelSource,
        stretched_mask,
    )
    from rmcli.contracts.output import ComposeOptions, OutputOptions
    from rmcli.cpus import allowed_cpus, cgroup_cpu_limit, usable_cpu_count
    from rmcli.engine.families import BiRefNetModel, ClippedU2netModel, ClothSegModel
    from rmcli.engine.layout import CoreBudget
    from rmcli.engine.remover import Remover
    from rmcli.engine.runner import Batch

# public name -> module it lives in (imported on first use)
_LAZY = {
    "Remover": "rmcli.engine.remover",
    "Batch": "rmcli.engine.runner",
    "CoreBudget": "rmcli.engine.layout",
    "Settings": "rmcli.config.settings",
    "Backend": "rmcli.contracts.backend",
    "Provider": "rmcli.contracts.backend",
    "base_options": "rmcli.contracts.backend",
    "provider_name": "rmcli.contracts.backend",
    "Model": "rmcli.contracts.model",
    "Weights": "rmcli.contracts.model",
    "WheelSource": "rmcli.contracts.model",
    "stretched_mask": "rmcli.contracts.model",
    "IMAGENET_MEAN": "rmcli.contracts.model",
    "IMAGENET_STD": "rmcli.contracts.model",
    "BiRefNetModel": "rmcli.engine.families",
    "ClippedU2netModel": "rmcli.engine.families",
    "ClothSegModel": "rmcli.engine.families",
    "Executor": "rmcli.contracts.executor",
    "Job": "rmcli.contracts.jobs",
    "Result": "rmcli.contracts.jobs",
    "OutputOptions": "rmcli.contracts.output",
    "ComposeOptions": "rmcli.contracts.output",
    "SessionPlan": "rmcli.contracts.backend",
    "ThreadLayout": "rmcli.contracts.layout",
    "Clock": "rmcli.contracts.clock",
    "untimed": "rmcli.contracts.clock",
    "allowed_cpus": "rmcli.cpus",
    "cgroup_cpu_limit": "rmcli.cpus",
    "usable_cpu_count": "rmcli.cpus",
}

__all__ = [
    "BackendError",
    "ConfigError",
    "InputError",
    "ModelError",
    "RmcliError",
    "UsageError",
    "__version__",
    "hookimpl",
    "Remover",
    "Batch",
    "CoreBudget",
    "Settings",
    "Backend",
    "Provider",
    "base_options",
    "provider_name",
    "Model",
    "Weights",
    "WheelSource",
    "stretched_mask",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BiRefNetModel",
    "ClippedU2netModel",
    "ClothSegModel",
    "Executor",
    "Job",
    "Result",
    "OutputOptions",
    "ComposeOptions",
    "SessionPlan",
    "ThreadLayout",
    "Clock",
    "untimed",
    "allowed_cpus",
    "cgroup_cpu_limit",
    "usable_cpu_count",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rmcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
