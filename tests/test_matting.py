"""Alpha matting (pymatting, extra rmcli[matting]): rembg's result, bounded on big images."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from helpers import CAR, DATA
from PIL import Image

from rmcli.errors import UsageError
from rmcli.extras import pip_install


@pytest.fixture(scope="module")
def matted(remover) -> Image.Image:
    return remover.remove(CAR, alpha_matting=True)


def test_matting_equals_rembg_with_its_default_thresholds(matted):
    reference = np.asarray(Image.open(DATA / "rembg-outputs" / "car-1.matting.alpha.png"), int)
    ours = np.asarray(matted.getchannel("A"), int)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1


def test_large_images_are_matted_on_a_bounded_copy(remover, matted):
    car = Image.open(CAR)
    bounded = remover.remove(CAR, alpha_matting=True, matting_max_pixels=40_000)
    assert bounded.size == car.size and bounded.mode == "RGBA"
    alpha = np.asarray(bounded.getchannel("A"), float)
    assert np.abs(alpha - np.asarray(matted.getchannel("A"), float)).mean() < 3
    opaque = alpha == 255
    assert opaque.any()  # full-resolution colour where the matte is opaque
    assert (np.asarray(bounded)[opaque][:, :3] == np.asarray(car)[opaque]).all()


def test_missing_pymatting_names_the_extra(remover, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pymatting" else real(name, *a),
    )
    with pytest.raises(UsageError, match=re.escape(pip_install("matting"))):
        remover.remove(CAR, alpha_matting=True)
