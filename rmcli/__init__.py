"""rmcli: remove image backgrounds with ONNX models, on explicit, measurable CPU/GPU backends.

This module is the stable API for programs and plugins: everything a backend, model or
executor plugin needs is importable from ``rmcli`` itself (see docs/plugins.md). Names are
imported lazily, so ``import rmcli`` stays light (no pluggy, onnxruntime, numpy or Pillow).

Each public name is listed once, as an ``import NAME as NAME`` line below (the form type
checkers read as a re-export): the light ones are imported now, the ``TYPE_CHECKING`` ones on
first use, and ``__all__`` is made from these lines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rmcli.errors import BackendError as BackendError
from rmcli.errors import ConfigError as ConfigError
from rmcli.errors import InputError as InputError
from rmcli.errors import ModelError as ModelError
from rmcli.errors import RmcliError as RmcliError
from rmcli.errors import UsageError as UsageError
from rmcli.version import __version__ as __version__

if TYPE_CHECKING:
    from rmcli.config.settings import Layer as Layer
    from rmcli.config.settings import Settings as Settings
    from rmcli.contracts.backend import Backend as Backend
    from rmcli.contracts.backend import Provider as Provider
    from rmcli.contracts.backend import SessionPlan as SessionPlan
    from rmcli.contracts.backend import base_options as base_options
    from rmcli.contracts.backend import provider_name as provider_name
    from rmcli.contracts.clock import Clock as Clock
    from rmcli.contracts.clock import untimed as untimed
    from rmcli.contracts.executor import Executor as Executor
    from rmcli.contracts.executor import Masker as Masker
    from rmcli.contracts.executor import Stop as Stop
    from rmcli.contracts.jobs import Job as Job
    from rmcli.contracts.jobs import Result as Result
    from rmcli.contracts.model import IMAGENET_MEAN as IMAGENET_MEAN
    from rmcli.contracts.model import IMAGENET_STD as IMAGENET_STD
    from rmcli.contracts.model import Model as Model
    from rmcli.contracts.model import Weights as Weights
    from rmcli.contracts.model import WheelSource as WheelSource
    from rmcli.contracts.model import stretched_mask as stretched_mask
    from rmcli.contracts.output import ComposeOptions as ComposeOptions
    from rmcli.contracts.output import OutputOptions as OutputOptions
    from rmcli.contracts.threads import ThreadLayout as ThreadLayout
    from rmcli.cpus import allowed_cpus as allowed_cpus
    from rmcli.cpus import cgroup_cpu_limit as cgroup_cpu_limit
    from rmcli.cpus import usable_cpu_count as usable_cpu_count
    from rmcli.engine.families import BiRefNetModel as BiRefNetModel
    from rmcli.engine.families import ClippedU2netModel as ClippedU2netModel
    from rmcli.engine.families import ClothSegModel as ClothSegModel
    from rmcli.engine.layout import CoreBudget as CoreBudget
    from rmcli.engine.remover import Remover as Remover
    from rmcli.engine.runner import Batch as Batch
    from rmcli.engine.runner import process as process
    from rmcli.engine.runner import run_local as run_local
    from rmcli.hookspecs import hookimpl as hookimpl


def _public() -> tuple[list[str], dict[str, str]]:
    """``__all__`` and {lazy name: its module}, read from the import lines above."""
    import ast

    lazy: dict[str, str] = {}
    names: list[str] = []
    with open(__file__, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        later = isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        statements = node.body if isinstance(node, ast.If) and later else [node]
        for statement in statements:
            if not isinstance(statement, ast.ImportFrom) or statement.module is None:
                continue
            for alias in statement.names:
                if alias.asname == alias.name:
                    names.append(alias.name)
                    if later:
                        lazy[alias.name] = statement.module
    return names, lazy


def __getattr__(name: str) -> Any:
    global _table
    if _table is None:
        _table = _public()
    if name == "__all__":
        return list(_table[0])
    module = _table[1].get(name)
    if module is None:
        raise AttributeError(f"module 'rmcli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__getattr__("__all__"))


_table: tuple[list[str], dict[str, str]] | None = None
