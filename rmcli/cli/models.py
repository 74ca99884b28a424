"""``rmcli models``: list and fetch model weights."""

from __future__ import annotations

import json
from typing import Annotated

import typer

models_app = typer.Typer(help="List and fetch model weights.", no_args_is_help=True)


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every known model: cached or not, size and path."""
    from rmcli.plugins import models
    from rmcli.session import store_for
    from rmcli.settings import resolve

    store = store_for(resolve())
    rows = []
    for name, model in sorted(models().items()):
        path = store.path_for(model.weights)
        cached = path.is_file()
        size = path.stat().st_size if cached else model.weights.size
        rows.append(
            {
                "name": name,
                "cached": cached,
                "size": size,
                "path": str(path),
                "summary": model.summary,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        size = f"{row['size'] / 1e6:.1f} MB" if row["size"] else "?"
        state = "cached" if row["cached"] else "not cached"
        typer.echo(f"{row['name']:<24} {state:<11} {size:>9}  {row['path']}")


@models_app.command("pull")
def pull(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Fetch a model's weights into the cache (verified by checksum)."""
    import sys

    from rmcli.plugins import get_model
    from rmcli.session import store_for
    from rmcli.settings import resolve

    model = get_model(name)
    path = store_for(resolve()).ensure(model.weights, progress=lambda m: print(m, file=sys.stderr))
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
