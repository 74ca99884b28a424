"""local: the batch runs in this process (the default executor)."""

from __future__ import annotations

from rmcli import hookimpl
from rmcli.executors import Executor


class LocalExecutor(Executor):
    name = "local"
    summary = "In this process, on this machine's cores (default)"
    in_process = True

    def run(self, remover, jobs, options, stop=None):
        from rmcli.batch import run_local

        return enumerate(run_local(remover, jobs, options, stop))


@hookimpl
def register_executors(register):
    register(LocalExecutor())
