"""``rmcli models``: list, fetch, import, verify and remove model weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rmcli.errors import EXIT_INPUT_FAILED

models_app = typer.Typer(
    help="List, fetch, import, verify and remove model weights.", no_args_is_help=True
)


def _store():
    from rmcli.config.settings import resolve
    from rmcli.engine.session import store_for

    return store_for(resolve())


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every known model: cached or not, size and path."""
    from rmcli.engine.registry import models

    store = _store()
    rows = []
    for name, model in sorted(models().items()):
        weights = model.weights
        path = store.path_for(weights)
        present = path.is_file()
        if store.in_cache(weights):
            state = "cached" if present else "not cached"
        else:
            state = "in place" if present else "missing"
        rows.append(
            {
                "name": name,
                "cached": present,
                "state": state,
                "size": path.stat().st_size if present else weights.size,
                "path": str(path),
                "checksum": weights.checksum,
                "family": model.family,
                "input_size": list(model.input_size),
                "summary": model.summary,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = _size(row["size"])
        typer.echo(f"{row['name']:<24} {row['state']:<11} {size:>9}  {row['path']}")


@models_app.command("pull")
def pull(names: Annotated[list[str], typer.Argument(help="Model names.")]) -> None:
    """Fetch models' weights into the cache (verified by checksum)."""
    from rmcli.engine.registry import get_model

    chosen = [get_model(name) for name in names]
    store = _store()
    for model in chosen:
        path = store.ensure(
            model.weights, progress=lambda m: print(m, file=sys.stderr), model_name=model.name
        )
        typer.echo(str(path))


@models_app.command("import", short_help="Copy a weights file into the cache, checked first.")
def import_weights(
    file: Annotated[Path, typer.Argument(help="A weights file you already have.")],
    name: Annotated[str, typer.Option("--as", help="The model it holds (rmcli models list).")],
) -> None:
    """Copy a weights file into the cache for a known model, after checking its checksum."""
    from rmcli.engine.registry import get_model
    from rmcli.errors import UsageError

    try:
        model = get_model(name)
    except UsageError as exc:
        raise UsageError(f"{exc}. For other weights use --model-path FILE --model-family") from None
    typer.echo(str(_store().import_file(file, model.weights)))


@models_app.command("verify", short_help="Re-hash cached weights; exit 1 on a mismatch.")
def verify() -> None:
    """Re-hash every cached weights file; exit 1 if any does not match its checksum."""
    from rmcli.engine.registry import models

    store = _store()
    checked = bad = 0
    for name, model in sorted(models().items()):
        path = store.path_for(model.weights)
        if not path.is_file():
            continue
        checked += 1
        problem = store.verify(model.weights)
        if problem:
            bad += 1
            typer.echo(f"{name:<24} BAD  {path}: {problem}")
        else:
            unchecked = "" if model.weights.checksum else " (no checksum declared)"
            typer.echo(f"{name:<24} ok   {path}{unchecked}")
    print(f"{checked} checked, {bad} bad", file=sys.stderr)
    if bad:
        print("rmcli models pull NAME fetches a good copy again", file=sys.stderr)
        raise typer.Exit(EXIT_INPUT_FAILED)


@models_app.command("rm")
def remove_weights(names: Annotated[list[str], typer.Argument(help="Model names.")]) -> None:
    """Delete models' weights from the cache."""
    from rmcli.engine.registry import get_model

    chosen = [get_model(name) for name in names]
    store = _store()
    for model in chosen:
        typer.echo(f"removed {store.remove(model.weights)}")


def _size(size: int | None) -> str:
    if not size:
        return "?"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
