"""What lands on disk: ICC and EXIF carried, 16-bit input, folders, resuming."""

from __future__ import annotations

import io
import shutil

import numpy as np
from helpers import CAR, EXAMPLES, GIRL
from helpers import rmcli_here as rmcli
from PIL import Image

from rmcli.images.imaging import encode

WITH_ICC = EXAMPLES / "girl-1.jpg"


def test_icc_profile_is_carried_to_every_format(remover, tmp_path):
    icc = Image.open(WITH_ICC).info["icc_profile"]
    done = rmcli("remove", str(WITH_ICC), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    assert Image.open(tmp_path / "girl-1.png").info["icc_profile"] == icc
    result = remover.remove(WITH_ICC)
    for fmt in ("webp", "jpg"):
        assert Image.open(io.BytesIO(encode(result, fmt))).info["icc_profile"] == icc
    mask = remover.remove(WITH_ICC, only_mask=True)  # an RGB profile does not fit a grey mask
    assert "icc_profile" not in Image.open(io.BytesIO(encode(mask, "png"))).info


def test_exif_is_kept_with_orientation_reset(remover, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate 90 degrees clockwise
    exif[0x010F] = "rmcli-test"  # Make
    Image.open(CAR).save(tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    result = remover.remove(tmp_path / "sideways.jpg")
    assert result.size == (360, 480)  # upright
    upright = np.asarray(Image.open(CAR).convert("RGB").transpose(Image.Transpose.ROTATE_270), int)
    assert np.abs(np.asarray(result.convert("RGB"), int) - upright).mean() < 3  # the right way
    for fmt in ("png", "webp", "jpg"):
        written = Image.open(io.BytesIO(encode(result, fmt))).getexif()
        assert written[0x0112] == 1 and written[0x010F] == "rmcli-test", fmt


def test_16_bit_grey_is_scaled_not_clipped(u2netp_path, tmp_path):
    grey = np.asarray(Image.open(CAR).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    done = rmcli("remove", str(tmp_path / "grey16.png"), str(tmp_path / "grey8.png"))
    assert done.returncode == 0, done.stderr.decode()
    out16 = np.asarray(Image.open(tmp_path / "grey16.out.png"))
    out8 = np.asarray(Image.open(tmp_path / "grey8.out.png"))
    for channel in range(3):
        assert (out16[..., channel] == grey).all()  # clipping would make it all 255
    assert (out16[..., 3] == out8[..., 3]).all()  # same picture, same mask


def test_recursive_batch_keeps_structure_and_resumes(u2netp_path, tmp_path):
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    shutil.copy(CAR, source / "a.jpg")
    shutil.copy(EXAMPLES / "girl-1.jpg", source / "sub" / "b.jpg")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b.png").write_bytes(b"done before the interruption")

    done = rmcli("remove", str(source), "-r", "-o", str(out), "--skip-existing")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [str(out / "a.png")]
    assert "1 written, 1 skipped" in done.stderr.decode()
    assert (out / "sub" / "b.png").read_bytes() == b"done before the interruption"
    assert Image.open(out / "a.png").mode == "RGBA"

    again = rmcli("remove", str(source), "-r", "-o", str(out), env={"RMCLI_SKIP_EXISTING": "1"})
    assert again.returncode == 0 and again.stdout == b""
    assert "0 written, 2 skipped" in again.stderr.decode()


def test_output_is_never_written_over_its_input(u2netp_path, tmp_path):
    Image.open(CAR).save(tmp_path / "car.png")
    before = (tmp_path / "car.png").read_bytes()
    done = rmcli("remove", str(tmp_path / "car.png"), "-o", str(tmp_path))
    assert done.returncode == 1
    assert "would overwrite the input" in done.stderr.decode()
    assert (tmp_path / "car.png").read_bytes() == before


def test_map_writes_a_batch_with_output_options(remover, tmp_path):
    results = list(remover.map([str(CAR)], tmp_path, only_mask=True, crop=True, crop_margin=4))
    assert [r.error for r in results] == [None]
    mask = remover.remove(CAR, only_mask=True)
    written = Image.open(tmp_path / "car-1.png")
    left, top, right, bottom = mask.point(lambda v: 255 if v > 10 else 0).getbbox()
    assert written.mode == "L"
    width = min(480, right + 4) - max(0, left - 4)
    assert written.size == (width, min(360, bottom + 4) - max(0, top - 4))


def test_output_file_named_by_o_and_its_suffix_picks_the_format(u2netp_path, tmp_path):
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path / "cut.webp"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == str(tmp_path / "cut.webp")
    assert Image.open(tmp_path / "cut.webp").format == "WEBP"
    done = rmcli("remove", str(GIRL), "-o", str(tmp_path / "forced.webp"), "--format", "png")
    assert Image.open(tmp_path / "forced.webp").format == "PNG"  # --format wins
    done = rmcli("remove", str(GIRL), str(EXAMPLES / "girl-2.jpg"), "-o", str(tmp_path / "x.png"))
    assert done.returncode == 2 and "names one file, but there are 2 inputs" in done.stderr.decode()
    assert not (tmp_path / "x.png").exists()


def test_a_folder_without_r_says_what_it_left_in_sub_folders(u2netp_path, tmp_path):
    (tmp_path / "in" / "deep").mkdir(parents=True)
    shutil.copy(GIRL, tmp_path / "in" / "a.jpg")
    shutil.copy(GIRL, tmp_path / "in" / "deep" / "b.jpg")
    done = rmcli("remove", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert done.returncode == 0
    assert "1 image(s) in sub-folders skipped; add -r" in done.stderr.decode()
