"""The user config file: reading it, and changing it safely (a lock, a temporary file, a rename).

Every change reads the file, edits the parsed table and writes it back whole with tomli-w, so
concurrent ``rmcli config set`` calls never lose an update and a writer that dies half-way
leaves the previous file in place. tomli-w writes plain TOML: comments and hand formatting are
not kept. A file that is not valid TOML is never overwritten.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rmcli.atomic import atomic_path, temporary_pattern, why_unwritable
from rmcli.errors import ConfigError

CONFIG_ENV = "RMCLI_CONFIG"
LOCK_TIMEOUT_S = 30.0
PLUGINS = "plugins"
LAYOUTS = "layout"  # [layout.<model>] tables: thread layouts saved by `rmcli tune --save`
MODELS = "models"  # [models.NAME]: custom models (rmcli models add)


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """The config file: ``$RMCLI_CONFIG``, else ``config.toml`` in the user config folder."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("rmcli")) / "config.toml"


def read_config_file(path: Path) -> dict[str, Any]:
    """The parsed TOML file (empty when absent); a broken file is a :class:`ConfigError`."""
    try:
        if path.exists() and not path.is_file():  # a FIFO would block, a folder cannot be read
            raise ConfigError(f"{path}: the config file is not a regular file")
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):  # a file in the way: no config file there
        return {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: the config file is not UTF-8 text (byte {exc.object[exc.start]:#x} at "
            f"offset {exc.start}); TOML files must be UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML {_toml_error(exc)}") from None


def _toml_error(exc: tomllib.TOMLDecodeError) -> str:
    """``at line L, column C: reason`` from tomllib's message ``reason (at line L, column C)``."""
    message = str(exc)
    match = re.fullmatch(r"(?s)(.*) \((at line \d+, column \d+|at end of document)\)", message)
    if match:
        return f"{match[2]}: {match[1]}"
    return f": {message}"


def lock_path(path: Path) -> Path:
    """The lock file beside ``path`` (the config file itself is replaced, so is not locked)."""
    return path.with_name(path.name + ".lock")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the config file's lock; the OS releases it if this process dies."""
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path(path), timeout=LOCK_TIMEOUT_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"{path}: still locked by another rmcli after {LOCK_TIMEOUT_S:.0f} s "
            f"(lock file {lock_path(path)})"
        ) from None
    except OSError as exc:
        raise unwritable(path, exc) from None
    try:
        yield
    finally:
        lock.release()


def update_config(path: Path, change: Callable[[dict[str, Any]], bool | None]) -> dict[str, Any]:
    """Apply ``change`` to the parsed file and write the result, unless ``change`` returns False.

    Returns the new table.
    """
    with locked(path):
        data = read_config_file(path)  # a broken file raises here and stays as it was
        if change(data) is not False:
            write_config(path, data)
        return data


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as TOML to ``path`` atomically (call it while holding :func:`locked`)."""
    import tomli_w

    payload = tomli_w.dumps(data).encode("utf-8")
    _remove_stale_temporaries(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise unwritable(path, exc) from None
    _sync_folder(path.parent)


def unwritable(path: Path, exc: OSError) -> ConfigError:
    """The one-line error for a config file that cannot be written where it is."""
    return ConfigError(
        f"cannot write the config file {path}: {why_unwritable(exc)} "
        "(set RMCLI_CONFIG to a writable place)"
    )


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files left by writers that were killed; safe because we hold the lock."""
    for leftover in path.parent.glob(temporary_pattern(path)):
        leftover.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def plugin_key(key: str) -> tuple[str, str] | None:
    """``('name', 'option')`` for a key ``plugins.<name>.<option>``, else None."""
    parts = key.split(".")
    if parts[0] != PLUGINS:
        return None
    if len(parts) != 3 or not all(parts[1:]):
        raise ConfigError(f"plugin options are written plugins.<name>.<option>, not {key!r}")
    return parts[1], parts[2]


def plugin_value(raw: str) -> Any:
    """A plugin option from the command line: a TOML value (``8``, ``true``, ``[1, 2]``) or text."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def set_value(path: Path, key: str, value: Any) -> None:
    """Set a top-level ``key`` or ``plugins.<name>.<option>`` in the file."""
    plugin = plugin_key(key)

    def change(data: dict[str, Any]) -> None:
        if plugin is None:
            data[key] = value
            return
        tables = data.setdefault(PLUGINS, {})
        if not isinstance(tables, dict) or not isinstance(tables.get(plugin[0], {}), dict):
            raise ConfigError(f"{path}: plugins must hold [plugins.<name>] tables")
        tables.setdefault(plugin[0], {})[plugin[1]] = value

    update_config(path, change)


def unset_value(path: Path, key: str) -> bool:
    """Remove ``key`` from the file; False when it was not there (the file is not rewritten)."""
    plugin = plugin_key(key)
    removed = False

    def change(data: dict[str, Any]) -> bool:
        nonlocal removed
        if plugin is None:
            removed = data.pop(key, None) is not None
            return removed
        tables = data.get(PLUGINS)
        table = tables.get(plugin[0]) if isinstance(tables, dict) else None
        if isinstance(table, dict) and plugin[1] in table:
            del table[plugin[1]]
            if not table:
                del tables[plugin[0]]
            if not tables:
                del data[PLUGINS]
            removed = True
        return removed

    update_config(path, change)
    return removed


def get_plugin_value(path: Path, key: str) -> Any:
    """The value of ``plugins.<name>.<option>`` in the file; a ConfigError when absent."""
    name, option = plugin_key(key) or ("", "")
    tables = read_config_file(path).get(PLUGINS)
    table = tables.get(name) if isinstance(tables, dict) else None
    if not isinstance(table, dict) or option not in table:
        raise ConfigError(f"{key} is not set in {path}")
    return table[option]


def save_layout(path: Path, model: str, values: Mapping[str, Any]) -> None:
    """Store ``values`` (None values left out) as the ``[layout.<model>]`` table, replacing it."""

    def change(data: dict[str, Any]) -> None:
        tables = data.setdefault(LAYOUTS, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: layout must hold [layout.<model>] tables")
        tables[model] = {k: v for k, v in values.items() if v is not None}

    update_config(path, change)


def custom_models(path: Path) -> dict[str, dict[str, Any]]:
    """The ``[models.NAME]`` tables of the file (custom models added with ``rmcli models add``)."""
    tables = read_config_file(path).get(MODELS, {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"{path}: models must hold [models.<name>] tables")
    return tables


def set_custom_model(path: Path, name: str, table: dict[str, Any]) -> None:
    """Write (or replace) the ``[models.NAME]`` table."""

    def change(data: dict[str, Any]) -> None:
        tables = data.setdefault(MODELS, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"{path}: models must hold [models.<name>] tables")
        tables[name] = table

    update_config(path, change)


def unset_custom_model(path: Path, name: str) -> bool:
    """Remove the ``[models.NAME]`` table; False when it was not there."""
    removed = False

    def change(data: dict[str, Any]) -> bool:
        nonlocal removed
        tables = data.get(MODELS)
        if isinstance(tables, dict) and name in tables:
            del tables[name]
            if not tables:
                del data[MODELS]
            removed = True
        return removed

    update_config(path, change)
    return removed
