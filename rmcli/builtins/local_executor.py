"""local: the batch runs in this process (the default executor)."""

from __future__ import annotations

from rmcli.contracts.clock import untimed
from rmcli.contracts.executor import Executor
from rmcli.hookspecs import hookimpl


class LocalExecutor(Executor):
    name = "local"
    summary = "In this process, on this machine's cores (default)"
    in_process = True

    def run(self, remover, jobs, options, stop=None, clock=untimed):
        from rmcli.engine.runner import run_local

        return enumerate(run_local(remover, jobs, options, stop, clock))


@hookimpl
def register_executors(register):
    register(LocalExecutor())
