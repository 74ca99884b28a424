"""Hook specifications for rmcli plugins.

A plugin is a module or object with functions marked ``@rmcli.hookimpl`` whose names
match the specifications below. Built-in backends and models use the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from rmcli.backends import Backend
    from rmcli.executors import Executor
    from rmcli.models import Model
    from rmcli.session import SessionPlan

hookspec = pluggy.HookspecMarker("rmcli")
hookimpl = pluggy.HookimplMarker("rmcli")


@hookspec
def register_backends(register: Callable[[Backend], None]) -> None:
    """Call ``register(backend)`` once for each execution backend the plugin provides.

    A backend follows the :class:`rmcli.backends.Backend` contract (name, summary,
    availability, session options, providers).
    """


@hookspec
def register_models(register: Callable[[Model], None]) -> None:
    """Call ``register(model)`` once for each model the plugin provides.

    A model follows the :class:`rmcli.models.Model` contract (name, weights with checksums,
    input size, normalisation, how its output becomes a mask).
    """


@hookspec
def register_executors(register: Callable[[Executor], None]) -> None:
    """Call ``register(executor)`` once for each executor the plugin provides.

    An executor follows the :class:`rmcli.executors.Executor` contract (name, summary,
    availability, and ``run`` yielding ``(index, result)`` pairs as jobs finish).
    """


@hookspec
def adjust_session(plan: SessionPlan) -> None:
    """Adjust ``plan.options`` (an ``onnxruntime.SessionOptions``) or ``plan.providers`` in place.

    Called for every plugin after the chosen backend has built the plan and just before
    the ``InferenceSession`` is created. ``plan.model``, ``plan.backend`` and
    ``plan.settings`` say what is being built. Return nothing.
    """


@hookspec
def session_created(session: Any, plan: SessionPlan) -> None:
    """Inspect a freshly built ``onnxruntime.InferenceSession`` (for logging or checks).

    Raise an :class:`rmcli.errors.RmcliError` to refuse the session.
    """
