"""Building ONNX Runtime sessions through the backend and the hooks, cached per process."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmcli import threadpool
from rmcli.cpus import AFFINITY_ENTRY, allowed_cpus, check_affinity_entry
from rmcli.errors import BackendError, ModelError
from rmcli.plugins import call_each
from rmcli.settings import Settings
from rmcli.weights import WeightsStore

if TYPE_CHECKING:
    import onnxruntime as ort

    from rmcli.backends import Backend, Provider
    from rmcli.models import Model


@dataclass
class SessionPlan:
    """What goes into one ``InferenceSession``; hooks may change options and providers."""

    model: Model
    backend: Backend
    settings: Settings
    weights_path: Path
    options: Any  # onnxruntime.SessionOptions
    providers: list[Provider] = field(default_factory=list)


@dataclass
class LoadedSession:
    """A built session with the plan it came from and what it really runs on."""

    session: ort.InferenceSession
    plan: SessionPlan
    seconds_to_create: float

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run(self, tensor: Any) -> list[Any]:
        return self.session.run(None, {self.input_name: tensor})


_cache: dict[tuple, LoadedSession] = {}
_cache_lock = threading.Lock()


def store_for(settings: Settings) -> WeightsStore:
    """The weights store the settings point at."""
    return WeightsStore(settings["models_dir"] or None, offline=settings.get("offline", False))


def get_session(model: Model, backend: Backend, settings: Settings) -> LoadedSession:
    """The process-wide session for this model, backend and resolved options (built once)."""
    key = (model.name, model.weights, backend.name, settings.session_key())
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            loaded = build_session(model, backend, settings)
            _cache[key] = loaded
        return loaded


def clear_sessions() -> None:
    """Drop every cached session."""
    with _cache_lock:
        _cache.clear()


def _note(message: str) -> None:
    print(f"rmcli: {message}", file=sys.stderr)


def build_session(model: Model, backend: Backend, settings: Settings) -> LoadedSession:
    """Build a new session: backend options and providers, then ``adjust_session`` hooks."""
    ok, reason = backend.availability()
    if not ok and not backend.cpu_fallback:
        raise BackendError(f"backend {backend.name!r} is not available: {reason}")
    weights_path = store_for(settings).ensure(model.weights, progress=_note, model_name=model.name)
    plan = SessionPlan(
        model=model,
        backend=backend,
        settings=settings,
        weights_path=weights_path,
        options=backend.session_options(settings),
        providers=list(backend.providers(settings)),
    )
    call_each("adjust_session", plan=plan)
    check_thread_options(plan.options)
    threadpool.apply(plan.options, bool(settings.get("shared_threadpool")))
    import onnxruntime as ort

    started = time.perf_counter()
    try:
        # enable_fallback=0: no silent CPU retry printed on stdout; a failure is reported here
        session = ort.InferenceSession(
            str(plan.weights_path),
            sess_options=plan.options,
            providers=plan.providers,
            enable_fallback=0,
        )
    except Exception as exc:
        reason = " ".join(str(exc).split())  # one line, whatever ORT says
        raise ModelError(f"{plan.weights_path}: ONNX Runtime could not load it: {reason}") from None
    loaded = LoadedSession(session, plan, time.perf_counter() - started)
    _check_input(model, plan.weights_path, session)
    call_each("session_created", session=session, plan=plan)
    return loaded


def _check_input(model: Model, path: Path, session: Any) -> None:
    """Refuse weights whose fixed input shape is not what the model feeds them."""
    inputs = session.get_inputs()
    shape = list(inputs[0].shape) if inputs else []
    width, height = model.input_size
    if len(shape) != 4:
        return
    pairs = zip(shape[1:], (3, height, width), strict=True)
    if any(isinstance(got, int) and got != want for got, want in pairs):
        raise ModelError(
            f"{path}: the network takes input {shape} but model {model.name!r} "
            f"({model.family} family) feeds [1, 3, {height}, {width}]"
        )


def check_thread_options(options: Any) -> None:
    """Refuse thread settings ONNX Runtime would mangle: a malformed affinity entry.

    ORT answers a bad ``session.intra_op_thread_affinities`` with a misleading "EP Error"
    or a per-thread error after the fact; a :class:`BackendError` names the problem instead.
    """
    try:
        text = options.get_session_config_entry(AFFINITY_ENTRY)
    except RuntimeError:  # entry not set
        return
    try:
        check_affinity_entry(text, options.intra_op_num_threads, allowed_cpus())
    except ValueError as exc:
        raise BackendError(f"session option {AFFINITY_ENTRY}={text!r} {exc}") from None
