"""The Executor contract: where a batch of jobs runs (this process, a Dask cluster, ...).

Executors are plugins (hook ``register_executors``). ``run`` yields ``(index, result)`` pairs
as jobs finish, in any order; the batch runner puts them back into input order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rmcli.contracts.clock import Clock, untimed

if TYPE_CHECKING:
    from PIL import Image

    from rmcli.config.settings import Settings
    from rmcli.contracts.jobs import Job, Result
    from rmcli.contracts.output import OutputOptions
    from rmcli.contracts.threads import ThreadLayout


class Stop(threading.Event):
    """Set when a batch must start no new job (the first Ctrl-C or SIGTERM). ``aborted`` is
    set too when the started jobs must stop at their next stage and write nothing more (a
    second one). The runner hands every executor a ``Stop``; code that only needs "start
    nothing more" may treat it as the ``threading.Event`` it is."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = threading.Event()

    def abort(self) -> None:
        self.set()
        self.aborted.set()


class Masker(Protocol):
    """What a batch needs of its :class:`rmcli.Remover`."""

    settings: Settings

    @property
    def layout(self) -> ThreadLayout: ...

    @property
    def session(self) -> Any: ...

    def mask_of(self, image: Image.Image, clock: Clock = untimed) -> Image.Image: ...


class Executor:
    """Base class for executors; ``name`` is what users pass to ``--executor``.

    ``in_process`` is True when jobs run in this process: the runner then builds the session
    before the first image so that a bad backend or model fails early.
    """

    name: str = ""
    summary: str = ""
    in_process: bool = False
    #: True when this executor replaces a built-in one of the same name (see docs/plugins.md)
    replaces: bool = False
    #: ``"module:Class"`` of the inference service ``rmcli serve`` runs with this executor (a
    #: subclass of ``rmcli.serve.service.InferenceService``, imported only when serving); None:
    #: an ``in_process`` executor serves on this process's slots, any other cannot serve
    serve_with: str | None = None

    def availability(self) -> tuple[bool, str]:
        """Whether this executor can run here, and why (or why not), in a few words."""
        return True, "always available"

    def run(
        self,
        remover: Masker,
        jobs: Sequence[Job],
        options: OutputOptions,
        stop: Stop | None = None,
        clock: Clock = untimed,
    ) -> Iterator[tuple[int, Result]]:
        """Process every job, yielding ``(index into jobs, result)`` as each one finishes.

        ``remover`` is the :class:`rmcli.Remover` of the batch. An unusable input is a
        result with an error; an :class:`rmcli.RmcliError` raised here stops the whole batch
        (bad backend, unreachable cluster...). Once ``stop`` is set, start no further job.
        ``clock(stage)`` times the stages of in-process work.
        """
        raise NotImplementedError
