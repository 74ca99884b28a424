"""Output options on the real u2netp: mask, background, crop, formats, rembg-identical modes."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import CAR, DATA, EXAMPLES, rmcli
from PIL import Image, ImageOps

from rmcli.colors import parse_color
from rmcli.errors import UsageError
from rmcli.images.compose import crop_box

REMBG = DATA / "rembg-outputs"


@pytest.fixture(scope="module")
def car_alpha(remover) -> np.ndarray:
    return np.asarray(remover.remove(CAR).getchannel("A"))


def test_only_mask_is_the_cut_out_alpha(remover, car_alpha):
    mask = remover.remove(CAR, only_mask=True)
    assert mask.mode == "L"
    assert (np.asarray(mask) == car_alpha).all()


@pytest.mark.parametrize(
    "given, rgba",
    [
        ("lime", (0, 255, 0, 255)),
        ("#00ff00", (0, 255, 0, 255)),
        ("#00FF0080", (0, 255, 0, 128)),
        ("0, 255, 0", (0, 255, 0, 255)),
        ("0,255,0,128", (0, 255, 0, 128)),
        ((0, 255, 0), (0, 255, 0, 255)),
    ],
)
def test_colour_forms(given, rgba):
    assert parse_color(given) == rgba


@pytest.mark.parametrize("bad", ["notacolour", "1,2", "0,0,300", "#12345", "a,b,c"])
def test_bad_colours_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match="0-255|colour|3 or 4"):
        parse_color(bad)


def test_bgcolor_fills_where_alpha_is_zero(remover, car_alpha):
    out = remover.remove(CAR, bgcolor="#00ff00")
    assert out.mode == "RGB"  # an opaque background needs no alpha channel
    pixels = np.asarray(out)
    original = np.asarray(Image.open(CAR).convert("RGB"))
    assert (car_alpha == 0).any() and (car_alpha == 255).any()
    assert (pixels[car_alpha == 0] == (0, 255, 0)).all()
    assert (pixels[car_alpha == 255] == original[car_alpha == 255]).all()


def test_translucent_bgcolor_keeps_alpha(remover, car_alpha):
    pixels = np.asarray(remover.remove(CAR, bgcolor="0,0,255,128"))
    assert (pixels[car_alpha == 0] == (0, 0, 255, 128)).all()
    assert (pixels[car_alpha == 255][:, 3] == 255).all()


def test_bg_image_is_scaled_to_cover(remover, car_alpha, tmp_path):
    background = Image.new("RGB", (200, 100), (255, 0, 0))  # left half red, right half blue
    background.paste((0, 0, 255), (100, 0, 200, 100))
    background.save(tmp_path / "bg.png")
    out = np.asarray(remover.remove(CAR, bg_image=tmp_path / "bg.png"))
    assert out.shape == (360, 480, 3)  # 200x100 scaled by 3.6 to 720x360, centre 480 kept
    empty = car_alpha == 0
    left, right = empty.copy(), empty.copy()
    left[:, 230:] = False
    right[:, :250] = False
    assert left.any() and right.any()
    assert (out[left] == (255, 0, 0)).all()
    assert (out[right] == (0, 0, 255)).all()


def test_crop_keeps_all_alpha_above_threshold_plus_margin(remover, car_alpha):
    full = remover.remove(CAR)
    out = remover.remove(CAR, crop=True, crop_margin=7, crop_threshold=10)
    rows, cols = np.nonzero(car_alpha > 10)
    left, top = max(0, cols.min() - 7), max(0, rows.min() - 7)
    right, bottom = min(480, cols.max() + 1 + 7), min(360, rows.max() + 1 + 7)
    assert out.size == (right - left, bottom - top)
    assert (np.asarray(out) == np.asarray(full)[top:bottom, left:right]).all()


def test_crop_threshold_ignores_faint_edge_alpha(remover):
    mask = remover.remove(EXAMPLES / "anime-girl-1.jpg", only_mask=True)
    faint = np.asarray(mask)
    assert ((faint > 0) & (faint <= 10)).any()
    left, top, right, bottom = crop_box(mask, 0, 0)  # faint alpha nearly everywhere...
    assert right - left > 0.95 * mask.width and bottom - top == mask.height
    cropped = remover.remove(EXAMPLES / "anime-girl-1.jpg", only_mask=True, crop=True)
    assert cropped.width < 0.8 * mask.width  # ...is ignored by the default threshold 10


def test_premultiplied_is_rembgs_composite_of_the_mask(remover):
    """rembg's cut-out is ``Image.composite(photo, transparent, mask)`` (its ``naive_cutout``),
    computed here with the Pillow this test runs on: equal to the last bit."""
    ours = np.asarray(remover.remove(CAR, premultiplied=True))
    photo = ImageOps.exif_transpose(Image.open(CAR))
    mask = remover.remove(CAR, only_mask=True)
    expected = np.asarray(Image.composite(photo, Image.new("RGBA", photo.size, 0), mask))
    assert ours.shape == expected.shape
    assert (ours == expected).all()


def test_premultiplied_matches_rembgs_stored_cut_out_within_resampling(remover):
    """The stored file is rembg 2.0.86's own output, made under one Pillow version. Pillow's
    LANCZOS resampling (the mask's resize) moved by one level on a few values between
    versions, so the honest comparison is: one level at most, on at most 0.1% of values."""
    ours = np.asarray(remover.remove(CAR, premultiplied=True), dtype=int)
    reference = np.asarray(Image.open(REMBG / "car-1.rembg.png"), dtype=int)
    assert ours.shape == reference.shape
    difference = np.abs(ours - reference)
    assert difference.max() <= 1
    assert (difference > 0).mean() <= 0.001


def test_post_process_mask_equals_rembg(remover):
    """rembg's stored ``-ppm`` mask: binary, and equal except where a one-level resampling
    difference between Pillow versions could tip a pixel over the 127 threshold (0.1%)."""
    ours = np.asarray(remover.remove(CAR, only_mask=True, post_process_mask=True))
    reference = np.asarray(Image.open(REMBG / "car-1.ppm.png"))
    assert set(np.unique(ours)) == {0, 255}
    assert (ours != reference).mean() <= 0.001


def test_unknown_option_is_a_usage_error(remover):
    with pytest.raises(UsageError, match="only_masks"):
        remover.remove(CAR, only_masks=True)


def test_formats_follow_extension_jpeg_flattened_webp_keeps_alpha(u2netp_path, car_alpha, tmp_path):
    done = rmcli("remove", str(CAR), "-o", str(tmp_path / "jpg"), "--format", "jpg")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == str(tmp_path / "jpg" / "car-1.jpg")
    jpeg = Image.open(tmp_path / "jpg" / "car-1.jpg")
    assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
    inside_background = _eroded(car_alpha == 0)
    assert np.abs(np.asarray(jpeg, float)[inside_background] - 255).max() <= 8  # white

    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--format", "jpg", "--bgcolor", "navy")
    assert done.returncode == 0, done.stderr.decode()
    navy = np.asarray(Image.open(tmp_path / "car-1.jpg"), float)[inside_background]
    assert np.abs(navy - (0, 0, 128)).max() <= 8

    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--format", "webp")
    assert done.returncode == 0, done.stderr.decode()
    webp = Image.open(tmp_path / "car-1.webp")
    assert webp.format == "WEBP" and webp.mode == "RGBA"
    assert (np.asarray(webp.getchannel("A")) == car_alpha).all()  # lossless


def _eroded(region: np.ndarray, by: int = 3) -> np.ndarray:
    """``region`` without pixels within ``by`` of its edge (away from JPEG ringing)."""
    out = region.copy()
    for axis in (0, 1):
        for shift in range(1, by + 1):
            out &= np.roll(region, shift, axis) & np.roll(region, -shift, axis)
    return out


def test_stdin_to_stdout_round_trip(u2netp_path, car_alpha):
    done = rmcli("remove", "-", "-o", "-", "--format", "webp", stdin=CAR.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    import io

    out = Image.open(io.BytesIO(done.stdout))
    assert out.format == "WEBP"
    assert (np.asarray(out.getchannel("A")) == car_alpha).all()


def test_bad_bgcolor_is_a_usage_error(u2netp_path, tmp_path):
    done = rmcli("remove", str(CAR), "-o", str(tmp_path), "--bgcolor", "0,0,300")
    assert done.returncode == 2
    assert "0,0,300" in done.stderr.decode() and "Traceback" not in done.stderr.decode()
    assert not list(tmp_path.iterdir())
