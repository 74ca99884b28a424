"""Regenerate rmcli_model_example/studio-white.onnx (needs ``pip install onnx``).

The network is tiny but real: for an RGB input scaled to [0, 1] it computes
``sigmoid(GAIN * (1 - min(R, G, B) - THRESHOLD))``, the probability that a pixel is not
part of a white studio background. THRESHOLD and GAIN are its two weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 320
THRESHOLD = 0.15  # how far below pure white (in the darkest channel) a pixel becomes subject
GAIN = 120.0  # edge steepness
TARGET = Path(__file__).parent / "rmcli_model_example" / "studio-white.onnx"


def build() -> onnx.ModelProto:
    constants = {
        "one": 1.0,
        "threshold": THRESHOLD,
        "gain": GAIN,
    }
    initializers = [
        numpy_helper.from_array(np.array(value, np.float32), name)
        for name, value in constants.items()
    ]
    nodes = [
        helper.make_node("ReduceMin", ["image"], ["darkest"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["one", "darkest"], ["depth"]),
        helper.make_node("Sub", ["depth", "threshold"], ["margin"]),
        helper.make_node("Mul", ["margin", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["subject"]),
    ]
    graph = helper.make_graph(
        nodes,
        "studio_white",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("subject", TensorProto.FLOAT, [1, 1, SIDE, SIDE])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="rmcli-model-example"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    data = build().SerializeToString()
    TARGET.write_bytes(data)
    print(TARGET, len(data), "bytes, sha256", hashlib.sha256(data).hexdigest())
