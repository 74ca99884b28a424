"""The plugin manager: built-in plugins plus third-party ones from the ``rmcli`` entry points.

Hooks are called through pluggy (so ``wrapper=True`` implementations, tracing and
``check_pending`` work). Each plain implementation runs inside a guard: a plugin that raises
is named in one warning and the other plugins go on; an :class:`RmcliError` from
``adjust_session`` or ``session_created`` is a refusal and propagates. ``RMCLI_DISABLE_PLUGINS``
(comma-separated names, like pytest's ``-p no:NAME``) blocks plugins before they load;
``RMCLI_DEBUG`` traces every hook call to the ``rmcli.hooks`` logger.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from rmcli import hookspecs
from rmcli.contracts.backend import Backend
from rmcli.contracts.executor import Executor
from rmcli.contracts.model import Model
from rmcli.errors import RmcliError, UsageError
from rmcli.version import __version__

if TYPE_CHECKING:
    from rmcli.contracts.backend import SessionPlan

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rmcli"
DISABLE_ENV = "RMCLI_DISABLE_PLUGINS"

BUILTIN_PLUGINS = (
    "rmcli.builtins.cpu_pinned",
    "rmcli.builtins.cuda_hybrid",
    "rmcli.builtins.openvino",
    "rmcli.builtins.openmp_env",
    "rmcli.builtins.u2net_models",
    "rmcli.builtins.isnet_models",
    "rmcli.builtins.birefnet_models",
    "rmcli.builtins.local_executor",
    "rmcli.builtins.dask_executor",
)

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_DIST_OF: dict[str, tuple[str, str]] = {}
_calling: contextvars.ContextVar[str] = contextvars.ContextVar("rmcli_plugin", default="?")


def disabled_plugins(env: dict[str, str] | None = None) -> set[str]:
    """Plugin names listed in ``RMCLI_DISABLE_PLUGINS``."""
    raw = (os.environ if env is None else env).get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _blocked(name: str, disabled: set[str]) -> bool:
    """A built-in is also known by its last part: ``dask_executor`` for its module."""
    return name in disabled or name.rsplit(".", 1)[-1] in disabled


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built (and entry points loaded) once, on first use."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("rmcli")
            pm.add_hookspecs(hookspecs)
            disabled = disabled_plugins()
            for name in BUILTIN_PLUGINS:
                if _blocked(name, disabled):
                    pm.set_blocked(name)
                    continue
                _register(pm, importlib.import_module(name), name)
            _load_entry_points(pm, disabled)
            _check_pending(pm)
            _guard_all(pm)
            if os.environ.get("RMCLI_DEBUG"):
                hooks_log = logging.getLogger("rmcli.hooks")
                pm.trace.root.setwriter(lambda text: hooks_log.debug(text.rstrip()))
                pm.enable_tracing()
            _manager = pm
        return _manager


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> bool:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # pluggy refuses an implementation that does not fit its spec
        log.warning(f"plugin {name!r} is not used: {exc}")
        return False
    return True


def _load_entry_points(pm: pluggy.PluginManager, disabled: set[str]) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        if _blocked(ep.name, disabled):
            pm.set_blocked(ep.name)
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:  # a broken plugin must not take rmcli down
            log.warning(
                f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
            )
            continue
        if _register(pm, plugin, ep.name) and ep.dist is not None:
            _DIST_OF[ep.name] = (ep.dist.name, ep.dist.version)


def _check_pending(pm: pluggy.PluginManager) -> None:
    """Report (and drop) each plugin implementing a hook rmcli does not have (a misspelling)."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            log.warning(f"plugin {name!r} is not used: {exc}")
            pm.unregister(exc.plugin)


def _guard_all(pm: pluggy.PluginManager) -> None:
    """Wrap every plain hook implementation in :func:`_guarded` (wrappers are left alone)."""
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if not isinstance(caller, pluggy.HookCaller):
            continue
        for impl in caller.get_hookimpls():
            if not (impl.hookwrapper or impl.wrapper):
                impl.function = _guarded(impl.function, impl.plugin_name, name)


def _guarded(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def call(*args: Any) -> Any:
        token = _calling.set(plugin)
        before = _plan_parts(args) if hook == "adjust_session" else None
        try:
            return function(*args)
        except RmcliError:
            if hook.startswith("register_"):
                log.warning(f"plugin {plugin!r} failed in {hook}; it is skipped")
                return None
            raise
        except Exception as exc:
            log.warning(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}")
            return None
        finally:
            if before is not None:
                _restore_broken_plan(args[0], before, plugin)
            _calling.reset(token)

    return call


def _plan_parts(args: tuple[Any, ...]) -> tuple[Any, Any]:
    plan = args[0]
    return plan.options, list(plan.providers)


def _restore_broken_plan(plan: SessionPlan, before: tuple[Any, Any], plugin: str) -> None:
    """Undo what a plugin's ``adjust_session`` broke (options or providers of the wrong type)."""
    import onnxruntime as ort

    options, providers = before
    if not isinstance(plan.options, ort.SessionOptions):
        log.warning(
            f"plugin {plugin!r} set plan.options to {type(plan.options).__name__} in "
            "adjust_session (not an onnxruntime.SessionOptions); the change is undone"
        )
        plan.options = options
    if not _valid_providers(plan.providers):
        log.warning(
            f"plugin {plugin!r} set plan.providers to {plan.providers!r} in adjust_session "
            "(not a list of provider names or (name, options) pairs); the change is undone"
        )
        plan.providers = providers


def _valid_providers(providers: Any) -> bool:
    if not isinstance(providers, list) or not providers:
        return False
    return all(
        isinstance(p, str)
        or (
            isinstance(p, tuple)
            and len(p) == 2
            and isinstance(p[0], str)
            and isinstance(p[1], dict)
        )
        for p in providers
    )


def _collect(hook_name: str, kind: type) -> list[tuple[str, Any]]:
    """``(plugin name, object)`` for what every plugin registers through a registry hook;
    wrong objects are named and skipped."""
    found: list[tuple[str, Any]] = []

    def register(item: Any) -> None:
        plugin = _calling.get()
        if not isinstance(item, kind) or not isinstance(getattr(item, "name", None), str):
            log.warning(
                f"plugin {plugin!r} registered {item!r} in {hook_name}, which is not a "
                f"{kind.__name__}; it is skipped"
            )
            return
        found.append((plugin, item))

    getattr(get_plugin_manager().hook, hook_name)(register=register)
    return found


def call_hook(hook_name: str, **kwargs: Any) -> None:
    """Call a notification hook (``adjust_session``, ``session_created``) on every plugin."""
    getattr(get_plugin_manager().hook, hook_name)(**kwargs)


def _by_name(items: list[tuple[str, Any]], kind: str) -> dict[str, Any]:
    """One object per name. A name belongs to the first plugin that registers it (built-ins
    first, then third-party plugins in entry-point order); a later plugin that registers the
    same name is refused with a warning, unless its object sets ``replaces = True``: then it
    takes the name over, and a log line says so."""
    order = {name: n for n, (name, _) in enumerate(get_plugin_manager().list_name_plugin())}
    table: dict[str, tuple[str, Any]] = {}
    # pluggy calls the latest registered plugin first: sort back into registration order
    for plugin, item in sorted(items, key=lambda pair: order.get(pair[0], len(order))):
        if item.name not in table:
            table[item.name] = (plugin, item)
            continue
        owner = table[item.name][0]
        if getattr(item, "replaces", False) is True:
            _say(
                logging.INFO,
                f"{kind} {item.name!r} of {_origin(plugin)} replaces the one of "
                f"{_origin(owner)} (it sets replaces = True)",
            )
            table[item.name] = (plugin, item)
        else:
            _say(
                logging.WARNING,
                f"{kind} {item.name!r} of {_origin(plugin)} is not used: the name belongs to "
                f"{_origin(owner)}; a plugin that means to replace it sets replaces = True "
                f"on its {kind}",
            )
    return {name: item for name, (_, item) in table.items()}


_said: set[str] = set()


def _say(level: int, message: str) -> None:
    """Log ``message`` once per process (the tables are built on every look-up)."""
    if message not in _said:
        _said.add(message)
        log.log(level, message)


def _origin(plugin: str) -> str:
    """``plugin 'NAME' (distribution DIST VERSION)``, or ``the built-in plugin ...``."""
    if plugin in BUILTIN_PLUGINS:
        return f"the built-in plugin {plugin!r} (distribution rmcli {__version__})"
    dist, version = _DIST_OF.get(plugin, ("unknown", ""))
    return f"plugin {plugin!r} (distribution {dist} {version})".replace(" )", ")")


def backends() -> dict[str, Backend]:
    """Every registered backend, by name."""
    return _by_name(_collect("register_backends", Backend), "backend")


def catalogue() -> dict[str, Model]:
    """The models plugins register (the built-in catalogue among them), by name."""
    return _by_name(_collect("register_models", Model), "model")


def models() -> dict[str, Model]:
    """Every model, by name: the catalogue, then the config file's custom ``[models.NAME]``.

    A custom table that is broken or shadows a catalogue name is named in a warning and
    skipped, so that one bad table does not stop every command.
    """
    from rmcli.config.file import config_path, custom_models
    from rmcli.engine.families import registered_model

    table = catalogue()
    path = config_path()
    for name, spec in custom_models(path).items():
        if name in table:
            log.warning(f"{path}: [models.{name}] shadows a catalogue model and is ignored")
            continue
        try:
            table[name] = registered_model(name, spec)
        except RmcliError as exc:
            log.warning(f"{path}: [models.{name}] is ignored: {exc}")
    return table


def executors() -> dict[str, Executor]:
    """Every registered executor, by name."""
    return _by_name(_collect("register_executors", Executor), "executor")


def get_backend(name: str, source: str = "") -> Backend:
    """The backend called ``name``, or a :class:`UsageError` listing the known ones (and
    naming ``source``, where the name came from)."""
    return _lookup(backends(), name, "backend", source)


def get_model(name: str, source: str = "") -> Model:
    """The model called ``name``, or a :class:`UsageError` listing the known ones."""
    return _lookup(models(), name, "model", source)


def get_executor(name: str, source: str = "") -> Executor:
    """The executor called ``name``; a :class:`UsageError` if unknown or unavailable here."""
    executor = _lookup(executors(), name, "executor", source)
    ok, reason = executor.availability()
    if not ok:
        raise UsageError(f"executor {name!r} is not available: {reason}")
    return executor


def _lookup(table: dict[str, Any], name: str, kind: str, source: str = "") -> Any:
    try:
        return table[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, table, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(table)) or "none"
        origin = f" from {source}" if source else ""
        raise UsageError(f"unknown {kind} {name!r}{origin}{hint}; known: {known}") from None


@dataclass(frozen=True)
class PluginInfo:
    """What ``rmcli plugins`` shows for one plugin."""

    name: str
    version: str
    hooks: list[str]
    builtin: bool


def plugin_infos() -> list[PluginInfo]:
    """Name, version and implemented hooks of every registered plugin."""
    pm = get_plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # blocked
            continue
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        builtin = name in BUILTIN_PLUGINS
        version = __version__ if builtin else _DIST_OF.get(name, ("", "unknown"))[1]
        infos.append(PluginInfo(name=name, version=version, hooks=hooks, builtin=builtin))
    return infos
