"""local: the batch runs in this process (the default executor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from rmcli.contracts.clock import Clock, untimed
from rmcli.contracts.executor import Executor
from rmcli.hookspecs import hookimpl

if TYPE_CHECKING:
    from rmcli.contracts.executor import Masker, Stop
    from rmcli.contracts.jobs import Job, Result
    from rmcli.contracts.output import OutputOptions


class LocalExecutor(Executor):
    name = "local"
    summary = "In this process, on this machine's cores (default)"
    in_process = True

    def run(
        self,
        remover: Masker,
        jobs: Sequence[Job],
        options: OutputOptions,
        stop: Stop | None = None,
        clock: Clock = untimed,
    ) -> Iterator[tuple[int, Result]]:
        from rmcli.engine.runner import run_local

        return enumerate(run_local(remover, jobs, options, stop, clock))


@hookimpl
def register_executors(register):
    register(LocalExecutor())
