"""The Executor contract: where a batch of jobs runs (this process, a Dask cluster, ...).

Executors are plugins (hook ``register_executors``). ``run`` yields ``(index, result)`` pairs
as jobs finish, in any order; :func:`in_input_order` turns them back into input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

    from rmcli.batch import OutputOptions, Result
    from rmcli.inputs import Job
    from rmcli.remover import Remover


class Executor:
    """Base class for executors; ``name`` is what users pass to ``--executor``.

    ``in_process`` is True when jobs run in this process: the CLI then builds the session
    before the first image so that a bad backend or model fails early.
    """

    name: str = ""
    summary: str = ""
    in_process: bool = False

    def availability(self) -> tuple[bool, str]:
        """Whether this executor can run here, and why (or why not), in a few words."""
        return True, "always available"

    def run(
        self,
        remover: Remover,
        jobs: Sequence[Job],
        options: OutputOptions,
        stop: threading.Event | None = None,
    ) -> Iterator[tuple[int, Result]]:
        """Process every job, yielding ``(index into jobs, result)`` as each one finishes.

        An unusable input is a result with an error; an :class:`rmcli.errors.RmcliError`
        raised here stops the whole batch (bad backend, unreachable cluster...). Once
        ``stop`` is set (Ctrl-C), start no further job and return.
        """
        raise NotImplementedError


def in_input_order(
    pairs: Iterable[tuple[int, Result]], on_done: Callable[[Result], None] | None = None
) -> Iterator[Result]:
    """Results in input order; ``on_done`` is called for each one as soon as it finishes.

    When ``pairs`` ends early (interrupted), the results held back behind a missing one
    still come out, in input order.
    """
    waiting: dict[int, Result] = {}
    next_index = 0
    for index, result in pairs:
        if on_done is not None:
            on_done(result)
        waiting[index] = result
        while next_index in waiting:
            yield waiting.pop(next_index)
            next_index += 1
    for index in sorted(waiting):
        yield waiting[index]
