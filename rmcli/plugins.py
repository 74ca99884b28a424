"""The plugin manager: built-in plugins plus third-party ones from the ``rmcli`` entry points."""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from rmcli import hookspecs
from rmcli.errors import RmcliError, UsageError

if TYPE_CHECKING:
    from rmcli.backends import Backend
    from rmcli.executors import Executor
    from rmcli.models import Model

ENTRY_POINT_GROUP = "rmcli"

BUILTIN_PLUGINS = (
    "rmcli.builtins.cpu_pinned",
    "rmcli.builtins.cuda_hybrid",
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
_warned: set[str] = set()


def warn(message: str) -> None:
    """Print one warning line on stderr (each distinct message once per process)."""
    if message in _warned:
        return
    _warned.add(message)
    print(f"rmcli: warning: {message}", file=sys.stderr)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built (and entry points loaded) once, on first use."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("rmcli")
            pm.add_hookspecs(hookspecs)
            for name in BUILTIN_PLUGINS:
                pm.register(importlib.import_module(name), name=name)
            _load_entry_points(pm)
            _manager = pm
        return _manager


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken third-party plugin must not take rmcli down
            warn(f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
            continue
        if ep.dist is not None:
            _DIST_OF[ep.name] = (ep.dist.name, ep.dist.version)


def _collect(hook_name: str) -> list[Any]:
    """Call a registry hook per plugin, so a failing plugin is named and skipped."""
    pm = get_plugin_manager()
    found: list[Any] = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        try:
            impl.function(register=found.append)
        except Exception as exc:
            warn(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}")
    return found


def call_each(hook_name: str, **kwargs: Any) -> None:
    """Call a hook plugin by plugin: an :class:`RmcliError` is a refusal and propagates;
    any other exception names the plugin in one warning and the next plugin is called."""
    pm = get_plugin_manager()
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except RmcliError:
            raise
        except Exception as exc:
            warn(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}")


def _by_name(items: list[Any], kind: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for item in items:
        if item.name in table:
            warn(f"{kind} {item.name!r} is registered twice; the later one wins")
        table[item.name] = item
    return table


def backends() -> dict[str, Backend]:
    """Every registered backend, by name."""
    return _by_name(_collect("register_backends"), "backend")


def models() -> dict[str, Model]:
    """Every registered model, by name."""
    return _by_name(_collect("register_models"), "model")


def executors() -> dict[str, Executor]:
    """Every registered executor, by name."""
    return _by_name(_collect("register_executors"), "executor")


def get_backend(name: str) -> Backend:
    """The backend called ``name``, or a :class:`UsageError` listing the known ones."""
    return _lookup(backends(), name, "backend")


def get_model(name: str) -> Model:
    """The model called ``name``, or a :class:`UsageError` listing the known ones."""
    return _lookup(models(), name, "model")


def get_executor(name: str) -> Executor:
    """The executor called ``name``; a :class:`UsageError` if unknown or unavailable here."""
    executor = _lookup(executors(), name, "executor")
    ok, reason = executor.availability()
    if not ok:
        raise UsageError(f"executor {name!r} is not available: {reason}")
    return executor


def _lookup(table: dict[str, Any], name: str, kind: str) -> Any:
    try:
        return table[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, table, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(table)) or "none"
        raise UsageError(f"unknown {kind} {name!r}{hint}; known: {known}") from None


@dataclass(frozen=True)
class PluginInfo:
    """What ``rmcli plugins`` shows for one plugin."""

    name: str
    version: str
    hooks: list[str]
    builtin: bool


def plugin_infos() -> list[PluginInfo]:
    """Name, version and implemented hooks of every registered plugin."""
    from rmcli import __version__

    pm = get_plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        builtin = name in BUILTIN_PLUGINS
        version = __version__ if builtin else _DIST_OF.get(name, ("", "unknown"))[1]
        infos.append(PluginInfo(name=name, version=version, hooks=hooks, builtin=builtin))
    return infos
