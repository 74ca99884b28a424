"""``rmcli serve`` finds where inferences run through the executor registry, like batches do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")

from rmcli import Executor, hookimpl  # noqa: E402
from rmcli.config.settings import resolve  # noqa: E402
from rmcli.engine.registry import get_plugin_manager  # noqa: E402
from rmcli.errors import UsageError  # noqa: E402
from rmcli.serve.app import create_app  # noqa: E402
from rmcli.serve.service import InferenceService  # noqa: E402


class RemoteService(InferenceService):
    """What a third-party executor's service would be (here: the local one, renamed)."""

    executor = "remote-test"


class _Remote(Executor):
    name = "remote-test"
    summary = "a third-party executor that can serve"
    serve_with = f"{__name__}:RemoteService"


class _BatchOnly(Executor):
    name = "batch-only-test"
    summary = "a third-party executor for batches only"


class _Plugin:
    @hookimpl
    def register_executors(self, register):
        register(_Remote())
        register(_BatchOnly())


@contextlib.contextmanager
def _registered() -> Iterator[None]:
    manager = get_plugin_manager()
    plugin = _Plugin()
    manager.register(plugin, name="serve-executors-test")
    try:
        yield
    finally:
        manager.unregister(plugin)


def _service(executor: str) -> InferenceService:
    app = create_app(resolve({"executor": (executor, "flag --executor")}))
    return app.state.service


def test_a_third_party_executor_serves_through_the_service_it_names():
    with _registered():
        service = _service("remote-test")
    assert type(service) is RemoteService
    assert type(_service("local")) is InferenceService


def test_an_executor_without_a_service_is_refused_in_one_line_naming_it():
    with _registered(), pytest.raises(UsageError, match="'batch-only-test'.*cannot serve"):
        _service("batch-only-test")
    with pytest.raises(UsageError, match="unknown executor 'nosuch'"):
        _service("nosuch")
