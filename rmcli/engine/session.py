"""Building ONNX Runtime sessions (backend, layout, hooks) and the one cache that holds them."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
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


SessionKey = tuple[Any, ...]


def store_for(settings: Settings) -> WeightsStore:
    """The weights store the settings point at."""
    return WeightsStore(settings["models_dir"] or None, offline=settings.get("offline", False))


def session_key(
    model: Model, backend: Backend, settings: Settings, cores: int | None = None
) -> SessionKey:
    """What tells sessions apart: model, weights, backend, session settings, core count."""
    return (model.name, model.weights, backend.name, settings.session_key(), cores)


@dataclass
class _Entry:
    loaded: LoadedSession
    last_used: float


class SessionCache:
    """Sessions by :func:`session_key`, each built once even when several threads ask for it
    at the same moment (they wait for the one build; other keys build meanwhile).

    Unbounded unless :meth:`bound` sets ``max_sessions`` (least recently used dropped first)
    or ``ttl`` (sessions idle that long dropped by :meth:`evict_idle`). ``on_evict`` callbacks
    get the model name of each session dropped. Runs in flight keep the session they hold.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions: int | None = None
        self.ttl: float | None = None
        self.builds = 0
        self.evictions = 0
        self._clock = clock
        self._entries: OrderedDict[SessionKey, _Entry] = OrderedDict()
        self._building: dict[SessionKey, Future[LoadedSession]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def bound(self, max_sessions: int | None = None, ttl: float | None = None) -> None:
        """Hold at most ``max_sessions`` (None: any number), each idle at most ``ttl`` s."""
        self.max_sessions, self.ttl = max_sessions, ttl
        self._drop_over_bound()

    def on_evict(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(model_name)`` for each session dropped; returns the unsubscriber."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def has(self, key: SessionKey) -> bool:
        """Whether the session of ``key`` is built (a :meth:`get` would build nothing)."""
        return key in self._entries

    def get(self, key: SessionKey, build: Callable[[], LoadedSession]) -> LoadedSession:
        """The session of ``key``, built by ``build()`` if nobody has built it yet."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.last_used = self._clock()
                self._entries.move_to_end(key)
                return entry.loaded
            pending = self._building.get(key)
            builder = pending is None
            if pending is None:
                pending = self._building[key] = Future()
        if not builder:
            return pending.result()
        try:
            loaded = build()
        except BaseException as exc:
            with self._lock:
                del self._building[key]
            pending.set_exception(exc)
            pending.exception()  # retrieved: waiters get it, nobody is warned
            raise
        with self._lock:
            self.builds += 1
            self._entries[key] = _Entry(loaded, self._clock())
            del self._building[key]
        self._drop_over_bound()
        pending.set_result(loaded)
        return loaded

    def drop(self, name: str) -> None:
        """Forget every session of the model ``name``."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == name]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def evict_idle(self) -> int:
        """Drop the sessions unused for ``ttl`` seconds; how many went."""
        if self.ttl is None:
            return 0
        now = self._clock()
        with self._lock:
            stale = [k for k, e in self._entries.items() if now - e.last_used >= self.ttl]
            for key in stale:
                del self._entries[key]
        self._evicted(stale, "idle")
        return len(stale)

    def _drop_over_bound(self) -> None:
        gone = []
        with self._lock:
            while self.max_sessions is not None and len(self._entries) > self.max_sessions:
                gone.append(self._entries.popitem(last=False)[0])
        self._evicted(gone, "least recently used")

    def _evicted(self, keys: list[SessionKey], why: str) -> None:
        """Outside the lock: listeners may take their own locks, then call back here."""
        self.evictions += len(keys)
        for key in keys:
            log.info("session %s evicted (%s)", key[0], why)
            for listener in list(self._listeners):
                listener(key[0])


SESSIONS = SessionCache()
"""The process's sessions: every front end (CLI, library, service, Dask workers) uses it."""


def clear_sessions() -> None:
    """Drop every cached session."""
    SESSIONS.clear()


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
