"""Variants of a model's weights for ``rmcli bench --variants``: fp16 weights, and dynamic
int8 quantization (ONNX Runtime's ``quantize_dynamic``: ``ConvInteger``/``MatMulInteger``)."""

from __future__ import annotations

from pathlib import Path

VARIANTS = {
    "fp16": "fp16 weights",
    "quantized": "quantized int8",
}


def fp16_weights(source: Path, target: Path) -> Path:
    """A copy whose float initializers are stored as fp16, each cast back to fp32 by a
    ``Cast`` node (half the file; ONNX Runtime folds the casts when it builds the session)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers, casts, converted = [], [], set()
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            initializers.append(tensor)
            continue
        half = numpy_helper.to_array(tensor).astype(np.float16)
        initializers.append(numpy_helper.from_array(half, tensor.name + "__fp16"))
        casts.append(
            helper.make_node("Cast", [tensor.name + "__fp16"], [tensor.name], to=TensorProto.FLOAT)
        )
        converted.add(tensor.name)
    inputs = [i for i in graph.input if i.name not in converted]  # old graphs list weights too
    nodes = casts + list(graph.node)
    del graph.initializer[:], graph.node[:], graph.input[:]
    graph.initializer.extend(initializers)
    graph.node.extend(nodes)
    graph.input.extend(inputs)
    onnx.save(model, str(target))
    return target


def quantized(source: Path, target: Path) -> Path:
    """ONNX Runtime's dynamic quantization of the weights to int8 (with uint8 weights,
    u2netp's masks come out white)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target


def make_variant(kind: str, source: Path, folder: Path) -> Path:
    """Write the ``kind`` variant of ``source`` into ``folder``; returns its path."""
    target = folder / f"{source.stem}.{kind}.onnx"
    return (fp16_weights if kind == "fp16" else quantized)(source, target)
