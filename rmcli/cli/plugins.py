"""``rmcli plugins`` and ``rmcli backends``: what is installed and what it would use."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def plugins(as_json: JsonFlag = False) -> None:
    """Every plugin (built-in and installed): name, version and hooks."""
    from dataclasses import asdict

    from rmcli.engine.registry import plugin_infos

    infos = plugin_infos()
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in infos], indent=2))
        return
    for info in infos:
        origin = "built-in" if info.builtin else "installed"
        typer.echo(f"{info.name} {info.version} ({origin}): {', '.join(info.hooks)}")


def backends(as_json: JsonFlag = False) -> None:
    """Every backend: availability, reason and the providers it would use."""
    from rmcli.config.settings import resolve
    from rmcli.contracts.backend import provider_name
    from rmcli.engine.layout import resolve_layout
    from rmcli.engine.ort_install import mixed_install_problem
    from rmcli.engine.registry import backends as all_backends

    settings = resolve()
    mixed = mixed_install_problem()
    if mixed:
        logging.getLogger("rmcli.cli").warning(mixed)
    rows = []
    for name, backend in sorted(all_backends().items()):
        try:
            ok, reason = backend.availability()
            layout = resolve_layout(settings, backend, measure_idle=lambda cpus, limit: limit)
            providers = [provider_name(p) for p in backend.providers(settings, layout)]
        except Exception as exc:  # a broken plugin backend is listed, not fatal
            ok, reason, providers = False, f"its plugin failed: {type(exc).__name__}: {exc}", []
        rows.append(
            {
                "name": name,
                "available": ok,
                "reason": reason,
                "providers": providers,
                "origin": _origin(backend),
                "summary": backend.summary,
                "default": name == settings["backend"],
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "available" if row["available"] else "unavailable"
        mark = " (selected)" if row["default"] else ""
        typer.echo(f"{row['name']}{mark} [{row['origin']}] {state}: {row['reason']}")
        typer.echo(f"    {row['summary']}")
        typer.echo(f"    providers: {', '.join(row['providers'])}")


def _origin(backend) -> str:
    """'built-in', or 'installed: <distribution>' for a backend from a third-party package."""
    from importlib import metadata

    module = type(backend).__module__
    if module == "rmcli" or module.startswith("rmcli."):
        return "built-in"
    top = module.split(".")[0]
    dists = list(dict.fromkeys(metadata.packages_distributions().get(top, [])))
    return f"installed: {', '.join(dists)}" if dists else f"installed: {top}"


def register(app: typer.Typer) -> None:
    app.command()(plugins)
    app.command()(backends)
