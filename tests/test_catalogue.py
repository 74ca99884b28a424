"""The model catalogue: every rembg 2.0.86 model, its input preparation and output handling.

The expectations below are rembg 2.0.86's sources (rembg/sessions/*.py), typed in
independently of rmcli's catalogue; values are computed here from those formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from rmcli.engine.families import custom_model
from rmcli.engine.registry import get_model, models
from rmcli.errors import UsageError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_UNIT = ((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))
ANIME = ((0.485, 0.456, 0.406), (1.0, 1.0, 1.0))
RELEASES = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"

# name: (side, (mean, std), output handling, release file, checksum algorithm)
REMBG = {
    "u2net": (320, IMAGENET, "min-max", "u2net.onnx", "md5"),
    "u2netp": (320, IMAGENET, "min-max", "u2netp.onnx", "md5"),
    "u2net_human_seg": (320, IMAGENET, "min-max", "u2net_human_seg.onnx", "md5"),
    "u2net_cloth_seg": (768, IMAGENET, "classes", "u2net_cloth_seg.onnx", "md5"),
    "silueta": (320, IMAGENET, "min-max", "silueta.onnx", "md5"),
    "isnet-general-use": (1024, HALF_UNIT, "min-max", "isnet-general-use.onnx", "md5"),
    "isnet-anime": (1024, ANIME, "min-max", "isnet-anime.onnx", "md5"),
    "birefnet-general": (1024, IMAGENET, "sigmoid", "BiRefNet-general-epoch_244.onnx", "md5"),
    "birefnet-general-lite": (
        1024,
        IMAGENET,
        "sigmoid",
        "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx",
        "md5",
    ),
    "birefnet-portrait": (1024, IMAGENET, "sigmoid", "BiRefNet-portrait-epoch_150.onnx", "md5"),
    "birefnet-dis": (1024, IMAGENET, "sigmoid", "BiRefNet-DIS-epoch_590.onnx", "md5"),
    "birefnet-hrsod": (1024, IMAGENET, "sigmoid", "BiRefNet-HRSOD_DHU-epoch_115.onnx", "md5"),
    "birefnet-cod": (1024, IMAGENET, "sigmoid", "BiRefNet-COD-epoch_125.onnx", "md5"),
    "birefnet-massive": (
        1024,
        IMAGENET,
        "sigmoid",
        "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx",
        "md5",
    ),
    "bria-rmbg": (1024, IMAGENET, "min-max", "bria-rmbg-2.0.onnx", "sha256"),
}


def expected_input(colour, side, mean, std):
    """rembg's normalize() of a one-colour image: divide by the brightest value, then (x-m)/s."""
    brightest = max(colour)
    values = [(c / brightest - m) / s for c, m, s in zip(colour, mean, std, strict=True)]
    return np.broadcast_to(np.array(values)[None, :, None, None], (1, 3, side, side))


def test_every_rembg_model_is_registered_as_a_builtin():
    registered = models()
    assert set(REMBG) <= set(registered)


@pytest.mark.parametrize("name", sorted(REMBG))
def test_weights_are_named_and_fetched_as_rembg_does(name):
    side, _, _, release, algorithm = REMBG[name]
    weights = get_model(name).weights
    assert weights.filename == f"{name}.onnx"  # rembg's local name, so its caches are reused
    assert weights.urls[0] == RELEASES + release
    kind, _, digest = weights.checksum.partition(":")
    assert kind == algorithm and len(digest) == {"md5": 32, "sha256": 64}[algorithm]


@pytest.mark.parametrize("name", sorted(REMBG))
def test_preprocessing_matches_rembg_normalize(name):
    side, (mean, std), *_ = REMBG[name]
    model = get_model(name)
    colour = (200, 100, 50)
    tensor = model.preprocess(Image.new("RGB", (37, 23), colour))  # not square: squashed
    assert tensor.dtype == np.float32 and tensor.shape == (1, 3, side, side)
    np.testing.assert_allclose(tensor, expected_input(colour, side, mean, std), rtol=1e-6)
    # scaled by the image's brightest value, not by 255: a darker copy gives the same input
    darker = model.preprocess(Image.new("RGB", (37, 23), (100, 50, 25)))
    np.testing.assert_array_equal(darker, tensor)
    # RGBA: rembg converts to RGB first, so hidden colour under alpha 0 still counts
    hidden = model.preprocess(Image.new("RGBA", (37, 23), (*colour, 0)))
    np.testing.assert_array_equal(hidden, tensor)


def ramp_output(side: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """A (1, 1, side, side) output whose columns step lo..hi in quarters; and those steps."""
    steps = np.array([lo + (hi - lo) * k / 4 for k in range(5)], dtype=np.float32)
    columns = np.resize(steps, side)
    return np.tile(columns, (side, 1))[None, None], columns


@pytest.mark.parametrize("name", sorted(n for n in REMBG if REMBG[n][2] == "min-max"))
def test_min_max_output_is_stretched_and_truncated(name):
    side = REMBG[name][0]
    output, _ = ramp_output(side, -3.0, 5.0)
    extra = np.full((1, 1, side, side), 99.0, np.float32)  # only the first output counts
    mask = get_model(name).to_mask([output, extra], (side, side))
    assert mask.mode == "L" and mask.size == (side, side)
    # 0, .25, .5, .75, 1 times 255, truncated as numpy's astype(uint8) does
    assert list(np.asarray(mask)[0, :5]) == [0, 63, 127, 191, 255]


@pytest.mark.parametrize("name", sorted(n for n in REMBG if REMBG[n][2] == "sigmoid"))
def test_birefnet_output_goes_through_a_sigmoid_before_min_max(name):
    output, columns = ramp_output(1024, -6.0, 2.0)
    mask = np.asarray(get_model(name).to_mask([output], (1024, 1024)))
    sig = [1 / (1 + math.exp(-float(x))) for x in columns[:5]]
    expected = [(s - min(sig)) / (max(sig) - min(sig)) * 255 for s in sig]
    assert np.abs(mask[0, :5] - np.array(expected)).max() <= 1
    assert mask[0, 2] != 127  # a plain min-max would put the middle column at 127


def test_the_mask_is_resized_to_the_image_size():
    output, _ = ramp_output(320, 0.0, 1.0)
    model = get_model("u2netp")
    mask = model.to_mask([output], (640, 100))
    assert mask.size == (640, 100) and mask.mode == "L"
    at_input_size = model.to_mask([output], (320, 320))
    assert mask.tobytes() == at_input_size.resize((640, 100), Image.Resampling.LANCZOS).tobytes()


def cloth_output(side: int = 768) -> np.ndarray:
    """Logits whose arg-max is class 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    logits = np.zeros((1, 4, side, side), np.float32)
    half = side // 2
    logits[0, 0, :half, :half] = 5
    logits[0, 1, :half, half:] = 5
    logits[0, 2, half:, :half] = 5
    logits[0, 3, half:, half:] = 5
    return logits


@pytest.mark.parametrize(
    "category, quadrants",
    [("upper", {1}), ("lower", {2}), ("full", {3}), ("attire", {1, 2, 3})],
)
def test_cloth_seg_gives_the_mask_of_the_chosen_category(category, quadrants):
    model = get_model("u2net_cloth_seg").configure({"cloth_category": category})
    mask = np.asarray(model.to_mask([cloth_output()], (768, 768)))
    corners = {0: mask[0, 0], 1: mask[0, -1], 2: mask[-1, 0], 3: mask[-1, -1]}
    assert {k for k, v in corners.items() if v == 255} == quadrants
    assert {k for k, v in corners.items() if v == 0} == {0, 1, 2, 3} - quadrants
    assert set(np.unique(mask)) <= {0, 255}


def test_cloth_seg_defaults_to_all_clothes_and_refuses_unknown_categories():
    model = get_model("u2net_cloth_seg")
    mask = np.asarray(model.configure({}).to_mask([cloth_output()], (384, 384)))
    assert mask[10, 10] == 0 and mask[10, -10] == mask[-10, 10] == mask[-10, -10] == 255
    with pytest.raises(UsageError, match="hat"):
        model.configure({"cloth_category": "hat"})


@pytest.mark.parametrize(
    "family, like",
    [("u2net", "u2netp"), ("isnet", "isnet-general-use"), ("birefnet", "birefnet-general")],
)
def test_custom_weights_are_handled_like_their_family(tmp_path, family, like):
    custom = custom_model(tmp_path / "mine.onnx", family)
    reference = get_model(like)
    image = Image.new("RGB", (50, 40), (10, 200, 30))
    np.testing.assert_array_equal(custom.preprocess(image), reference.preprocess(image))
    side = reference.input_size[0]
    output, _ = ramp_output(side, -2.0, 2.0)
    assert custom.to_mask([output], (side, side)) == reference.to_mask([output], (side, side))
    assert custom.weights.path == str(tmp_path / "mine.onnx") and custom.weights.checksum == ""


def test_custom_weights_need_a_known_family(tmp_path):
    with pytest.raises(UsageError, match="u2net, isnet, birefnet"):
        custom_model(tmp_path / "mine.onnx", "")
