"""``rmcli models``: list, fetch, import, verify and remove model weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rmcli.errors import EXIT_INPUT_FAILED, RmcliError, UsageError

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
    from rmcli.engine.registry import catalogue, models

    store = _store()
    rows = []
    built_in = catalogue()
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
                "custom": name not in built_in,  # a [models.NAME] table of the config file
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
        custom = f"  (custom, {row['family']})" if row["custom"] else ""
        typer.echo(f"{row['name']:<24} {row['state']:<11} {size:>9}  {row['path']}{custom}")


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


@models_app.command("add", short_help="Register your own ONNX model under a name (-m NAME).")
def add(
    name: Annotated[str, typer.Argument(help="The name to use with -m.")],
    source: Annotated[str, typer.Argument(help="An ONNX file, or an http(s) URL of one.")],
    family: Annotated[
        str, typer.Option("--family", help="u2net, isnet or birefnet: pre- and post-processing.")
    ],
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="Checksum the file must have (hex).")
    ] = None,
    input_size: Annotated[
        str | None, typer.Option("--input-size", help="WxH instead of the family's.")
    ] = None,
    mean: Annotated[
        str | None, typer.Option("--mean", help="R,G,B mean instead of the family's.")
    ] = None,
    std: Annotated[
        str | None, typer.Option("--std", help="R,G,B std instead of the family's.")
    ] = None,
) -> None:
    """Check that an ONNX model loads, then record it as [models.NAME] in the config file.

    Afterwards -m NAME works wherever a model is named (remove, i/p/b, serve, bench, tune,
    Remover(model=NAME)). A local file is used in place; a URL is fetched into the cache.
    """
    from rmcli.config.file import config_path, set_custom_model
    from rmcli.engine.families import registered_model
    from rmcli.engine.registry import catalogue

    if name in catalogue():
        raise UsageError(f"{name!r} is a catalogue model; choose another name")
    spec: dict[str, Any] = {"family": family}
    if source.partition("://")[0].lower() in {"http", "https"}:
        spec["url"] = source
    else:
        path = Path(source).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"{source}: no such file")
        spec["path"] = str(path)
    if sha256:
        spec["sha256"] = sha256.lower()
    overrides = (("input_size", input_size, "x"), ("mean", mean, ","), ("std", std, ","))
    for key, raw, separator in overrides:
        if raw is not None:
            spec[key] = _parsed(key, raw, separator)
    model = registered_model(name, spec)  # the same checks as when the config is read
    store = _store()
    weights_path = store.ensure(
        model.weights, progress=lambda m: print(m, file=sys.stderr), model_name=name
    )
    try:
        shape = _checked_shape(weights_path, model.input_size, "input_size" in spec)
    except RmcliError:
        store.discard_unchecked(model.weights)  # a download nobody will use (no checksum)
        raise
    if "input_size" not in spec and shape != list(model.input_size):
        spec["input_size"] = shape  # the network's fixed size, not the family's
        model = registered_model(name, spec)
    set_custom_model(config_path(), name, spec)
    width, height = model.input_size
    typer.echo(f"added {name}: {family} family, input {width}x{height}")
    typer.echo(f"  weights {weights_path} ({_size(weights_path.stat().st_size)})")
    if spec.get("url"):
        typer.echo(f"  from {spec['url']}")
    typer.echo(f"  checksum {model.weights.checksum or 'none (give --sha256 to check it)'}")
    typer.echo(f"  mean {list(model.mean)} std {list(model.std)}")
    typer.echo(f"  recorded in {config_path()}")


@models_app.command("remove", short_help="Forget a model added with `models add`.")
def forget(name: Annotated[str, typer.Argument(help="A custom model's name.")]) -> None:
    """Remove [models.NAME] from the config file; the weights file itself is kept."""
    from rmcli.config.file import config_path, custom_models, unset_custom_model
    from rmcli.engine.registry import catalogue

    spec = custom_models(config_path()).get(name)
    if not unset_custom_model(config_path(), name):
        hint = "; `rmcli models rm` deletes cached weights" if name in catalogue() else ""
        raise UsageError(f"{name!r} is not a custom model (rmcli models add){hint}")
    kept = (spec or {}).get("path") or ""
    typer.echo(f"forgot {name}" + (f" (the file {kept} is kept)" if kept else ""))


def _parsed(key: str, raw: str, separator: str) -> list[float] | list[int]:
    try:
        if separator == "x":
            return [int(part) for part in raw.lower().split("x")]
        return [float(part) for part in raw.split(separator)]
    except ValueError:
        raise UsageError(f"--{key.replace('_', '-')} {raw!r}: not numbers") from None


def _checked_shape(path: Path, size: tuple[int, int], size_given: bool) -> list[int]:
    """[width, height] the network takes (``size`` where free); refuses other than [N, 3, H, W]."""
    from rmcli.engine.session import probe_input

    shape = probe_input(path)
    if len(shape) != 4:
        raise UsageError(
            f"{path}: the network's input has rank {len(shape)} ({shape}); "
            "background-removal models take [1, 3, height, width]"
        )
    if isinstance(shape[1], int) and shape[1] != 3:
        raise UsageError(f"{path}: the network's input {shape} does not take 3 colour channels")
    width, height = size
    fixed = [shape[3] if isinstance(shape[3], int) else width]
    fixed.append(shape[2] if isinstance(shape[2], int) else height)
    if size_given and fixed != [width, height]:
        raise UsageError(f"{path}: the network takes input {shape}, not {width}x{height}")
    return fixed


def _size(size: int | None) -> str:
    if not size:
        return "?"
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
