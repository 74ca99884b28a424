"""BiRefNet: 1024x1024, ImageNet normalisation, sigmoid then min-max; values as in rembg 2.0.86.

The local file is ``<name>.onnx`` (as rembg names it); the release file names differ.
"""

from __future__ import annotations

from rmcli.builtins.u2net_models import RELEASES
from rmcli.contracts.model import Weights
from rmcli.engine.families import BiRefNetModel
from rmcli.hookspecs import hookimpl

CATALOGUE = [
    # name, release file, md5, summary
    ("birefnet-general", "BiRefNet-general-epoch_244.onnx", "7a35a0141cbbc80de11d9c9a28f52697",
     "BiRefNet: general-purpose cut-outs"),
    ("birefnet-general-lite", "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
     "4fab47adc4ff364be1713e97b7e66334", "BiRefNet lite (Swin-T backbone): general use"),
    ("birefnet-portrait", "BiRefNet-portrait-epoch_150.onnx", "c3a64a6abf20250d090cd055f12a3b67",
     "BiRefNet for human portraits"),
    ("birefnet-dis", "BiRefNet-DIS-epoch_590.onnx", "2d4d44102b446f33a4ebb2e56c051f2b",
     "BiRefNet for dichotomous image segmentation (DIS)"),
    ("birefnet-hrsod", "BiRefNet-HRSOD_DHU-epoch_115.onnx", "c017ade5de8a50ff0fd74d790d268dda",
     "BiRefNet for high-resolution salient object detection"),
    ("birefnet-cod", "BiRefNet-COD-epoch_125.onnx", "f6d0d21ca89d287f17e7afe9f5fd3b45",
     "BiRefNet for concealed object detection"),
    ("birefnet-massive", "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx",
     "33e726a2136a3d59eb0fdf613e31e3e9", "BiRefNet trained on a massive dataset"),
]  # fmt: skip

MODELS = [
    BiRefNetModel(
        name=name,
        summary=summary,
        weights=Weights(filename=f"{name}.onnx", md5=md5, urls=(RELEASES + release,)),
    )
    for name, release, md5, summary in CATALOGUE
]


@hookimpl
def register_models(register):
    for model in MODELS:
        register(model)
