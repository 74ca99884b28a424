"""IS-Net (DIS) and BRIA RMBG 2.0: 1024x1024 inputs, min-max output, values as in rembg 2.0.86."""

from __future__ import annotations

from rmcli.builtins.u2net_models import RELEASES
from rmcli.contracts.model import IMAGENET_MEAN, Model, Weights
from rmcli.engine.families import ISNET_MEAN, UNIT_STD
from rmcli.hookspecs import hookimpl

MODELS = [
    Model(
        name="isnet-general-use",
        summary="IS-Net (DIS): general-purpose cut-outs, 1024x1024",
        weights=Weights(
            filename="isnet-general-use.onnx",
            md5="fc16ebd8b0c10d971d3513d564d01e29",
            urls=(RELEASES + "isnet-general-use.onnx",),
        ),
        input_size=(1024, 1024),
        mean=ISNET_MEAN,
        std=UNIT_STD,
        family="isnet",
    ),
    Model(
        name="isnet-anime",
        summary="IS-Net for anime characters, 1024x1024",
        weights=Weights(
            filename="isnet-anime.onnx",
            md5="6f184e756bb3bd901c8849220a83e38e",
            urls=(RELEASES + "isnet-anime.onnx",),
        ),
        input_size=(1024, 1024),
        mean=IMAGENET_MEAN,  # ImageNet mean but unit std: rembg's dis_anime.py
        std=UNIT_STD,
        family="isnet",
    ),
    Model(
        name="bria-rmbg",
        summary="BRIA RMBG 2.0 (~1.02 GB, rembg's default; commercial use needs BRIA's license)",
        weights=Weights(
            filename="bria-rmbg.onnx",
            sha256="5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958",
            urls=(RELEASES + "bria-rmbg-2.0.onnx",),
        ),
        input_size=(1024, 1024),
        family="bria",
    ),
]


@hookimpl
def register_models(register):
    for model in MODELS:
        register(model)
