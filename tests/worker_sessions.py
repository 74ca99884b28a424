"""Test instrumentation: counts the ONNX Runtime sessions a process builds (a Dask worker's),
through the public ``session_created`` hook. ``client.register_plugin(CountSessions())``
installs it on every worker of a cluster, joining ones too; ``client.run(session_threads)``
(or ``session_models``) then reads each worker's list."""

from __future__ import annotations

import sys

from distributed import WorkerPlugin

from rmcli import hookimpl

_threads: list[int] = []  # the intra-op thread count of each session built in this process
_models: list[str] = []  # the model of each session built in this process


@hookimpl
def session_created(session, plan):
    _threads.append(plan.options.intra_op_num_threads)
    _models.append(plan.model.name)


def session_threads() -> list[int]:
    """The intra-op thread count of each session built in this process, in order."""
    return list(_threads)


def session_models() -> list[str]:
    """The model of each session built in this process, in order."""
    return list(_models)


class CountSessions(WorkerPlugin):
    """Registers this module as an rmcli plugin in each worker process."""

    name = "rmcli-count-sessions"

    def setup(self, worker) -> None:
        from rmcli.engine.registry import get_plugin_manager

        manager = get_plugin_manager()
        if manager.get_plugin(__name__) is None:
            manager.register(sys.modules[__name__], name=__name__)
