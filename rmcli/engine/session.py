"""Building ONNX Runtime sessions (backend, layout, hooks) and caching them per process."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rmcli.contracts.backend import SessionPlan
from rmcli.contracts.threads import ThreadLayout
from rmcli.cpus import AFFINITY_ENTRY, check_affinity_entry
from rmcli.engine import threadpool
from rmcli.engine.layout import apply_layout, resolve_layout
from rmcli.engine.ort_install import mixed_install_problem, require_onnxruntime
from rmcli.engine.precision import check_precision
from rmcli.engine.registry import call_hook
from rmcli.engine.stats import SessionMemory, peak_rss_bytes, record_session_memory, rss_bytes
from rmcli.engine.weights import WeightsStore
from rmcli.errors import BackendError, ModelError

if TYPE_CHECKING:
    from pathlib import Path

    import onnxruntime as ort

    from rmcli.config.settings import Settings
    from rmcli.contracts.backend import Backend
    from rmcli.contracts.model import Model
    from rmcli.contracts.threads import ThreadLayout

log = logging.getLogger(__name__)


@dataclass
class LoadedSession:
    """A built session with the plan it came from and what it really runs on."""

    session: ort.InferenceSession
    plan: SessionPlan
    seconds_to_create: float

    @property
    def layout(self) -> ThreadLayout:
        return self.plan.layout

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    def run(self, tensor: Any) -> list[Any]:
        return self.session.run(None, {self.input_name: tensor})


_cache: dict[tuple, LoadedSession] = {}
_building: dict[tuple, threading.Lock] = {}
_cache_lock = threading.Lock()


def store_for(settings: Settings) -> WeightsStore:
    """The weights store the settings point at."""
    return WeightsStore(settings["models_dir"] or None, offline=settings.get("offline", False))


def get_session(
    model: Model, backend: Backend, settings: Settings, cores: int | None = None
) -> LoadedSession:
    """The process-wide session for this model, backend, session settings and core count.

    Built once, even when several threads ask for it at the same moment; sessions of other
    keys are built meanwhile without waiting.
    """
    key = (model.name, model.weights, backend.name, settings.session_key(), cores)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is not None:
            return loaded
        building = _building.setdefault(key, threading.Lock())
    with building:
        with _cache_lock:
            loaded = _cache.get(key)
        if loaded is None:
            loaded = build_session(model, backend, settings, cores)
            with _cache_lock:
                _cache[key] = loaded
                _building.pop(key, None)
        return loaded


def clear_sessions() -> None:
    """Drop every cached session."""
    with _cache_lock:
        _cache.clear()


def build_session(
    model: Model, backend: Backend, settings: Settings, cores: int | None = None
) -> LoadedSession:
    """A new session: layout, backend options and providers, ``adjust_session`` hooks, build,
    then the backend's and the plugins' checks of what was built."""
    require_onnxruntime()
    mixed = mixed_install_problem()
    if mixed:
        log.warning(mixed)
    check_precision(backend, settings)
    ok, reason = backend.availability()
    if not ok and not backend.cpu_fallback:
        raise BackendError(f"backend {backend.name!r} is not available: {reason}")
    weights_path = store_for(settings).ensure(
        model.weights, progress=log.info, model_name=model.name
    )
    layout = resolve_layout(settings, backend, cores=cores)
    options = backend.session_options(settings)
    apply_memory_options(options, settings)
    apply_layout(options, layout)
    plan = SessionPlan(
        model=model,
        backend=backend,
        settings=settings,
        layout=layout,
        weights_path=weights_path,
        options=options,
        providers=list(backend.providers(settings, layout)),
    )
    call_hook("adjust_session", plan=plan)
    plan.providers = _available(plan.providers)
    check_thread_options(plan.options)
    threadpool.apply(plan.options, layout, bool(settings.get("shared_threadpool")))
    started = time.perf_counter()
    rss_before = rss_bytes()
    try:
        created = _create(plan)
    except ModelError as exc:
        if plan.weights_path == weights_path and store_for(settings).discard_unchecked(
            model.weights
        ):  # fetched without a checksum: not kept for the next run to trip on
            raise ModelError(f"{exc} (it had no checksum and was removed from the cache)") from None
        raise
    loaded = LoadedSession(created, plan, 0.0)
    loaded.seconds_to_create = time.perf_counter() - started
    size = plan.weights_path.stat().st_size if plan.weights_path.is_file() else 0
    record_session_memory(SessionMemory(size, rss_before, rss_bytes(), peak_rss_bytes()))
    _check_input(model, plan.weights_path, loaded.session)
    backend.check_session(loaded.session, plan)
    call_hook("session_created", session=loaded.session, plan=plan)
    return loaded


M_ARENA_MAX = -8  # glibc's mallopt parameter


def apply_memory_options(options: Any, settings: Settings) -> None:
    """Setting ``cpu_mem_arena`` off: no ONNX Runtime CPU arena, and one malloc arena.

    With the arena, a session keeps every buffer of its largest run. Without it, ONNX Runtime
    allocates with malloc and frees as the graph goes; then the process's threads also share
    one glibc malloc arena (:func:`share_malloc_arena`), or memory freed in one thread's arena
    is not reused by the next run on another thread. A 1024x1024 ISNet, 2 images in flight:
    peak RSS about 1.3 GB with the arena, 1.23 GB without it, 0.88 GB without it and with one
    malloc arena; but each inference takes up to a quarter longer (fresh buffers are
    page-faulted every run), so the arena stays on by default (docs/performance.md).
    """
    if not settings.get("cpu_mem_arena", True):
        options.enable_cpu_mem_arena = False
        share_malloc_arena()


def share_malloc_arena() -> bool:
    """Make threads that allocate for the first time from now on share glibc's main malloc
    arena, for the rest of the process (as MALLOC_ARENA_MAX=1 would); False where not glibc.
    Called before the session and its threads exist."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        return False


def _create(plan: SessionPlan) -> Any:
    import onnxruntime as ort

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
    return session


def probe_input(path: Path) -> list[Any]:
    """The shape of the first input of the ONNX file at ``path`` (ints, or names for free
    dimensions), as ONNX Runtime loads it on the CPU; a :class:`ModelError` when it cannot."""
    import onnxruntime as ort

    require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    apply_layout(options, ThreadLayout(intra_threads=1, spinning=False))  # a probe: one thread
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = " ".join(str(exc).split())
        raise ModelError(f"{path}: not an ONNX model ONNX Runtime can load ({reason})") from None
    inputs = session.get_inputs()
    return list(inputs[0].shape) if inputs else []


def _available(providers: list) -> list:
    """The providers this onnxruntime has (asking for others only makes ORT print a Python
    warning); the backend's ``check_session`` says what a missing one means."""
    import onnxruntime as ort

    from rmcli.contracts.backend import provider_name

    have = set(ort.get_available_providers())
    kept = [p for p in providers if provider_name(p) in have]
    return kept or ["CPUExecutionProvider"]


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
    from rmcli.cpus import allowed_cpus

    try:
        text = options.get_session_config_entry(AFFINITY_ENTRY)
    except RuntimeError:  # entry not set
        return
    try:
        check_affinity_entry(text, options.intra_op_num_threads, allowed_cpus())
    except ValueError as exc:
        raise BackendError(f"session option {AFFINITY_ENTRY}={text!r} {exc}") from None
