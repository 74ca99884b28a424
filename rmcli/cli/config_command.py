"""``rmcli config``: show and change settings (flags > environment > config file > defaults)."""

from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Any

import typer

log = logging.getLogger("rmcli.cli.config_command")

config_app = typer.Typer(
    help="Show and change settings. Precedence: flags > environment (RMCLI_*) > the model's "
    "tuned layout (rmcli tune --save) > config file > "
    "defaults; related settings (model and model_path, backend and precision) resolve as one. "
    "See docs/configuration.md.",
    no_args_is_help=True,
)

KeyArg = Annotated[
    str, typer.Argument(help="A setting (rmcli config list) or plugins.<name>.<option>.")
]


def _plain(value: Any) -> str:
    """A value for scripts: bare text, ``true``/``false``, empty for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


@config_app.command("path", short_help="Print the config file's path.")
def path() -> None:
    """Print the config file's path (RMCLI_CONFIG, else the user config folder)."""
    from rmcli.config.file import config_path

    typer.echo(str(config_path()))


@config_app.command("get")
def get(key: KeyArg) -> None:
    """Print the effective value of KEY (from whichever layer sets it)."""
    from rmcli.config.file import config_path, get_plugin_value, plugin_key
    from rmcli.config.settings import known_setting, resolve

    if plugin_key(key) is not None:
        typer.echo(_plain(get_plugin_value(config_path(), key)))
        return
    known_setting(key)
    typer.echo(_plain(resolve()[key]))


@config_app.command("set", short_help="Write KEY = VALUE to the config file, checked first.")
def set_(
    key: KeyArg,
    value: Annotated[str, typer.Argument(help="The new value, checked before it is written.")],
) -> None:
    """Write KEY = VALUE to the config file (checked first; other keys are kept)."""
    from rmcli.config.file import config_path, plugin_key, plugin_value, set_value
    from rmcli.config.settings import format_value, known_setting, resolve
    from rmcli.cpus import usable_cpu_count

    path = config_path()
    if plugin_key(key) is not None:
        set_value(path, key, plugin_value(value))
        typer.echo(f"{key} = {format_value(plugin_value(value))} (file {path})")
        return
    setting = known_setting(key)
    stored = setting.convert(value, "rmcli config set")
    if key in ("model", "backend"):
        _check_registered(key, stored)
    set_value(path, key, stored)
    typer.echo(f"{key} = {format_value(stored)} (file {path})")
    if key in ("intra_threads", "inter_threads") and isinstance(stored, int):
        cores = usable_cpu_count()
        if stored > cores:
            log.warning(
                f"{key}={stored} is more than the {cores} usable core(s) here: the threads "
                "would compete for them and every image gets slower"
            )
    shadow = setting.env_override()
    if shadow is not None:
        log.warning(f"{shadow}={os.environ[shadow]} in the environment overrides {key} from {path}")
        return
    overridden = resolve().overridden  # related settings resolve as one
    if key in overridden:
        log.warning(f"{key} is not in effect: {overridden[key]}")


def _check_registered(key: str, name: str) -> None:
    from rmcli.engine.registry import get_backend, get_model

    (get_model if key == "model" else get_backend)(name)


@config_app.command("unset", short_help="Remove KEY from the config file.")
def unset(key: KeyArg) -> None:
    """Remove KEY from the config file, so the next layer down applies again."""
    from rmcli.config.file import config_path, plugin_key, unset_value
    from rmcli.config.settings import SETTINGS, known_setting

    path = config_path()
    removed = unset_value(path, key)
    if plugin_key(key) is not None:
        if not removed:
            log.warning(f"{key} was not set in {path}")
        return
    if not removed:
        known_setting(key)  # an unknown key that was not in the file either
        log.warning(f"{key} was not set in {path}")
    if key in SETTINGS and (shadow := SETTINGS[key].env_override()) is not None:
        log.warning(f"{shadow}={os.environ[shadow]} in the environment still sets {key}")


@config_app.command("list", short_help="Every setting, its value and (--sources) its layer.")
def list_(
    sources: Annotated[
        bool, typer.Option("--sources", help="Show where each value comes from.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every setting with its effective value (and, with --sources, its layer).

    Options of [plugins.<name>] tables follow, as plugins.<name>.<option>.
    """
    from rmcli.config.file import config_path
    from rmcli.config.settings import format_value, resolve

    settings = resolve()
    found = [(key, settings[key], settings.source(key)) for key in settings]
    for name, table in settings.plugins.items():
        found += [(f"plugins.{name}.{k}", v, f"file {config_path()}") for k, v in table.items()]
    if as_json:
        rows: dict[str, Any] = {k: {"value": v, "source": s} if sources else v for k, v, s in found}
        if sources:  # values a layer gave that are not in effect, and why
            for key, why in settings.overridden.items():
                rows[key]["not_in_effect"] = why
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for key, value, source in found:
        if sources and key in settings:
            typer.echo(settings.line(key))
            continue
        line = f"{key} = {format_value(value)}"
        typer.echo(f"{line} ({source})" if sources else line)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
