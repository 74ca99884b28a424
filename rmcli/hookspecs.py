"""Hook specifications for rmcli plugins.

A plugin is a module or object with functions marked ``@rmcli.hookimpl`` whose names
match the specifications below. Built-in backends, models and executors use the same hooks.
A function named like no hook here is reported when plugins load (pluggy's ``check_pending``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rmcli.contracts.backend import Backend, SessionPlan
    from rmcli.contracts.executor import Executor
    from rmcli.contracts.model import Model

hookspec = pluggy.HookspecMarker("rmcli")
hookimpl = pluggy.HookimplMarker("rmcli")


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Call ``register(backend)`` once for each execution backend the plugin provides.

    A backend follows the :class:`rmcli.contracts.backend.Backend` contract (name, summary,
    availability, session options, providers).
    """


@hookspec
def register_models(register: Callable[[Model], None]) -> None:
    """Call ``register(model)`` once for each model the plugin provides.

    A model follows the :class:`rmcli.contracts.model.Model` contract (name, weights with checksums,
    input size, normalisation, how its output becomes a mask).
    """


@hookspec
def register_executors(register: Callable[[Executor], None]) -> None:
    """Call ``register(executor)`` once for each executor the plugin provides.

    An executor follows the :class:`rmcli.contracts.executor.Executor` contract (name, summary,
    availability, and ``run`` yielding ``(index, result)`` pairs as jobs finish).
    """


@hookspec
def adjust_session(plan: SessionPlan) -> None:
    """Adjust ``plan.options`` (an ``onnxruntime.SessionOptions``) or ``plan.providers`` in place.

    Called for every plugin after the chosen backend has built the plan (its thread layout
    already applied) and just before the ``InferenceSession`` is created. ``plan.model``,
    ``plan.backend``, ``plan.settings`` and ``plan.layout`` say what is being built. A change
    of the wrong type is undone with a warning naming the plugin. Return nothing.
    """


@hookspec
def session_created(session: Any, plan: SessionPlan) -> None:
    """Inspect a freshly built ``onnxruntime.InferenceSession`` (for logging or checks).

    Called after the backend's own ``check_session``. Raise an :class:`rmcli.RmcliError` to
    refuse the session.
    """
