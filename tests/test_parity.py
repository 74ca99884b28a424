"""Masks match rembg 2.0.86 for u2netp: rembg's own test case and the 13 example photos."""

from __future__ import annotations

import numpy as np
from helpers import DATA, EXAMPLES, alpha_of, phash, rmcli
from PIL import Image

from rmcli import Remover
from rmcli.images.imaging import cutout, load_image


def test_peer_test_alpha_and_perceptual_hash(u2netp_path):
    source = DATA / "peer-test" / "anime-girl-1.jpg"
    expected = Image.open(DATA / "peer-test" / "anime-girl-1.u2netp.expected.png")
    remover = Remover(model="u2netp")
    ours = remover.remove(source)
    assert ours.mode == "RGBA" and ours.size == expected.size
    assert np.abs(alpha_of(ours) - alpha_of(expected)).mean() <= 0.5
    # rembg's own check is a perceptual hash of its (premultiplied) cut-out
    image = load_image(source)
    rembg_style = cutout(image, remover.mask_of(image), premultiplied=True)
    assert (phash(rembg_style) == phash(expected)).all()
    assert (phash(ours.getchannel("A")) == phash(expected.getchannel("A"))).all()


def test_cli_matches_rembg_on_every_example_photo(u2netp_path, tmp_path):
    photos = sorted(EXAMPLES.glob("*.jpg"))
    assert len(photos) == 13
    done = rmcli("remove", str(EXAMPLES / "*.jpg"), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    written = done.stdout.decode().split()
    assert written == [str(tmp_path / f"{p.stem}.png") for p in photos]
    for photo in photos:
        ours = Image.open(tmp_path / f"{photo.stem}.png")
        assert ours.mode == "RGBA"
        reference = alpha_of(DATA / "rembg-u2netp" / f"{photo.stem}.alpha.png")
        difference = np.abs(alpha_of(ours) - reference).mean()
        assert difference <= 0.5, f"{photo.name}: alpha differs by {difference:.3f} on average"


def test_cut_out_colour_is_straight_not_premultiplied(u2netp_path):
    source = EXAMPLES / "car-1.jpg"
    out = np.asarray(Remover().remove(source))
    original = np.asarray(Image.open(source).convert("RGB"))
    assert (out[..., :3] == original).all()
    partial = (out[..., 3] > 0) & (out[..., 3] < 255)
    assert partial.any()
