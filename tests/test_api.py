"""The Python API: any image source, EXIF orientation, and shared sessions."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import EXAMPLES
from PIL import Image

from rmcli import Remover, RmcliError

PHOTO = EXAMPLES / "girl-1.jpg"


def test_every_source_kind_gives_the_same_mask(u2netp_path):
    remover = Remover()
    expected = np.asarray(remover.mask(PHOTO))
    pil = Image.open(PHOTO)
    for source in (str(PHOTO), PHOTO.read_bytes(), pil, np.asarray(pil)):
        assert (np.asarray(remover.mask(source)) == expected).all()


def test_exif_orientation_is_applied_first(u2netp_path, tmp_path):
    upright = Image.open(PHOTO)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for tag 6
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 270 to display
    rotated_file = tmp_path / "rotated.jpg"
    stored.save(rotated_file, exif=exif, quality=100)
    remover = Remover()
    out = remover.remove(rotated_file)
    assert out.size == upright.size
    # a rotation the wrong way round has the same size: compare the content too
    expected = np.asarray(remover.mask(upright), float)
    assert np.abs(np.asarray(out.getchannel("A"), float) - expected).mean() < 2
    colour = np.asarray(out.convert("RGB"), float) - np.asarray(upright.convert("RGB"), float)
    assert np.abs(colour).mean() < 3  # JPEG re-encoding only


def test_same_settings_share_one_session_and_different_ones_do_not(u2netp_path):
    first = Remover(intra_threads=1)
    assert first.session is Remover(intra_threads=1).session
    assert first.session is not Remover(intra_threads=2).session


def test_unknown_setting_is_an_rmcli_error():
    with pytest.raises(RmcliError, match="did you mean 'intra_threads'"):
        Remover(intra_thread=2)


def test_remove_gives_rgba_with_the_mask_as_alpha(u2netp_path):
    remover = Remover()
    out = remover.remove(io.BytesIO(PHOTO.read_bytes()).getvalue())
    assert out.mode == "RGBA"
    assert (np.asarray(out.getchannel("A")) == np.asarray(remover.mask(PHOTO))).all()
