"""Every unusable input gets one line `PATH: reason`, the batch goes on, odd valid files work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import EXAMPLES, rmcli
from helpers.torture import (
    build_invalid,
    build_valid,
    drop_root_file_override,
    photo,
    png_header_only,
)
from PIL import Image, ImageFile

from rmcli import Remover
from rmcli.errors import InputError
from rmcli.images.imaging import load_image
from rmcli.images.inputs import plan_jobs

MAX_PIXELS = 1_000_000


def test_torture_folder_one_line_per_bad_file_and_correct_outputs(u2netp_path, tmp_path):
    valid = build_valid(tmp_path / "in")
    invalid = build_invalid(tmp_path / "in", MAX_PIXELS)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rmcli",
            "remove",
            "in",
            "missing.jpg",
            "nothing-*.png",
            "-o",
            "out",
        ],
        cwd=tmp_path,
        env={**os.environ, "RMCLI_MAX_PIXELS": str(MAX_PIXELS)},
        capture_output=True,
        text=True,
        preexec_fn=drop_root_file_override,  # as root, chmod 000 must still mean unreadable
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    errors = [ln for ln in lines[:-1] if not ln.startswith("rmcli: ")]
    expected = {f"in/{name}": phrase for name, phrase in invalid.items()}
    expected["missing.jpg"] = "no such file"
    expected["nothing-*.png"] = "no file matches"
    assert len(errors) == len(expected), done.stderr
    for label, phrase in expected.items():
        mine = [ln for ln in errors if ln.startswith(f"{label}: ")]
        assert len(mine) == 1 and phrase in mine[0], (label, done.stderr)
    notes = [ln for ln in lines if ln.startswith("rmcli: note: ")]
    assert notes == ["rmcli: note: in/pages.tif: has 3 frames; only the first is used"]
    assert lines[-1] == f"{len(valid)} written, {len(expected)} failed"
    assert len(lines) == len(errors) + len(notes) + 1, done.stderr

    outputs = {f"out/{name.rsplit('.', 1)[0]}.png": name for name in valid}
    assert sorted(done.stdout.splitlines()) == sorted(outputs)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        path.split("/", 1)[1] for path in outputs
    )
    for path, name in outputs.items():
        want = valid[name]
        out = Image.open(tmp_path / path)
        out.load()
        assert out.mode == "RGBA" and out.size == want["size"], name
        pixels = np.asarray(out).astype(int)
        if "transparent_cols" in want:  # source transparency survives the cut-out
            assert (pixels[:, : want["transparent_cols"], 3] == 0).all(), name
        if want.get("red_on_top"):  # EXIF orientation applied: upright output
            top, bottom = pixels[:40, :, :3].mean((0, 1)), pixels[40:, :, :3].mean((0, 1))
            assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0], (top, bottom)
        if want.get("first_frame_red"):
            assert (np.abs(pixels[..., :3] - (255, 0, 0)) <= 2).all()
        if "grey16" in want:  # 16-bit scaled to 8-bit, not clipped to white
            assert (np.abs(pixels[..., 0] - want["grey16"] / 257) <= 1).all()


def test_size_is_refused_from_the_header_before_decoding():
    header_only = png_header_only(2000, 2000)  # no pixel data at all
    with pytest.raises(InputError, match=r"^hdr: 2000x2000 = 4,000,000 pixels, over .*max_pixels"):
        load_image(header_only, "hdr", max_pixels=MAX_PIXELS)
    with pytest.raises(InputError, match="cannot decode"):  # decoding it would fail differently
        load_image(header_only, "hdr", max_pixels=10 * MAX_PIXELS)


def test_truncated_images_stay_errors(tmp_path):
    photo(120, 90).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match=r"cut.png: cannot decode image: .*truncated"):
        load_image(tmp_path / "cut.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pillow_bomb_limit_applies_without_a_max_pixels_setting():
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(png_header_only(20000, 20000), "bomb")
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)  # over the limit, under Pillow's error
    with (
        pytest.warns(Image.DecompressionBombWarning),  # library users keep Pillow's warning
        pytest.raises(InputError, match="over the limit of .*MAX_IMAGE_PIXELS"),
    ):
        load_image(png_header_only(side, side), "big")


def test_remover_api_uses_the_max_pixels_setting(tmp_path):
    photo(200, 100).save(tmp_path / "p.png")
    with pytest.raises(InputError, match="20,000 pixels, over the limit of 19,999"):
        Remover(max_pixels=19_999).load(tmp_path / "p.png")
    assert Remover(max_pixels=20_000).load(tmp_path / "p.png").size == (200, 100)


def test_an_output_never_overwrites_any_input(tmp_path):
    photo(10, 10).save(tmp_path / "a.jpg")
    photo(10, 10).save(tmp_path / "a.png")
    photo(10, 10).save(tmp_path / "b.jpg")
    jobs = plan_jobs([str(tmp_path / n) for n in ("a.jpg", "a.png", "b.jpg")], tmp_path, "png")
    errors = {job.source.name: job.error for job in jobs}
    assert errors["a.jpg"] == f"output {tmp_path / 'a.png'} would overwrite the input " + str(
        tmp_path / "a.png"
    )
    assert errors["a.png"] == f"output {tmp_path / 'a.png'} would overwrite the input"
    assert errors["b.jpg"] is None


def test_folder_scans_and_globs_keep_fifos_and_broken_links_so_they_are_reported(tmp_path):
    folder = tmp_path / "in"
    build_invalid(folder, MAX_PIXELS)
    (folder / "sub.jpg").mkdir()  # a folder named like an image is not an input
    for args in ([str(folder)], [str(folder / "*")]):
        names = {job.source.name for job in plan_jobs(args, tmp_path / "out", "png")}
        assert {"fifo.jpg", "dangling.png", "empty.jpg"} <= names
        assert "sub.jpg" not in names


BAD_EXIF = b"Exif\0\0XX\0*\0\0\0\x08\0\0"  # the reproduction


def _exif_variants() -> dict[str, bytes]:
    """Damaged EXIF blocks: Pillow fails on some while rewriting them (turning the image
    upright, or resetting the orientation for the output) and reads the rest with warnings."""
    good = Image.Exif()
    good[0x0112] = 6  # rotate: the output of a 30x20 input is 20x30
    good[0x010F] = "Cam"
    raw = good.tobytes()
    assert raw[16:18] == b"\x01\x0f"  # the first IFD entry: tag Make (ASCII), big-endian
    return {
        "issue.jpg": BAD_EXIF,  # SyntaxError: not a TIFF file
        "bad-byte-order.jpg": b"Exif\0\0" + b"\0M" + raw[8:],  # SyntaxError
        # Make becomes ImageWidth, still ASCII: struct.error when Pillow rewrites it
        "wrong-tag-type.jpg": raw[:17] + b"\x00" + raw[18:],
        "cut-short.jpg": raw[: len(raw) // 2],  # read with warnings
        "huge-count.jpg": raw[:14] + b"\xff\xff" + raw[16:],  # IFD entry count 65535
    }


def test_broken_exif_is_dropped_with_a_note_and_the_cutout_still_written(u2netp_path, tmp_path):
    Image.new("RGB", (64, 48)).save(tmp_path / "badexif.jpg", exif=BAD_EXIF)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    Image.new("RGB", (8, 6), "blue").save(tmp_path / "small.png")
    (tmp_path / "real.jpg").symlink_to(EXAMPLES / "car-1.jpg")
    Image.new("I;16", (20, 10), 3000).save(tmp_path / "g16.png")
    inputs = ["one.png", "badexif.jpg", "small.png", "real.jpg", "g16.png"]
    variants = _exif_variants()
    for name, exif in variants.items():
        Image.new("RGB", (30, 20), "green").save(tmp_path / name, exif=exif)
    done = rmcli("remove", *inputs, *variants, "-o", "out", cwd=tmp_path)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    names = [*inputs, *variants]
    assert done.stdout.decode().splitlines() == [f"out/{Path(n).stem}.png" for n in names]
    for name in names:
        with Image.open(tmp_path / "out" / f"{Path(name).stem}.png") as out:
            out.load()
    notes = [ln for ln in stderr.splitlines() if "broken EXIF metadata dropped" in ln]
    for name in ["badexif.jpg", "issue.jpg", "bad-byte-order.jpg", "wrong-tag-type.jpg"]:
        assert [ln for ln in notes if ln.startswith(f"rmcli: note: {name}: ")], (name, stderr)
    with Image.open(tmp_path / "out" / "wrong-tag-type.png") as out:
        assert out.size == (20, 30)  # the orientation was still applied
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == f"{len(names)} written, 0 failed"


def test_encoder_limits_are_one_reason_line_per_input_and_the_batch_goes_on(u2netp_path, tmp_path):
    Image.new("RGB", (17000, 20), "white").save(tmp_path / "wide.png")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    done = rmcli("remove", "wide.png", "one.png", "-o", "out", "--format", "webp", cwd=tmp_path)
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 1, lines
    assert lines == [
        "wide.png: 17000x20 is too large for WebP (at most 16,383 pixels per side); "
        "use --format png",
        "1 written, 1 failed",
    ]
    assert done.stdout.decode().splitlines() == ["out/one.webp"]

    exif = Image.Exif()
    exif[0x927C] = bytes(70_000)  # a 70 KB maker note: more than one JPEG segment holds
    Image.new("RGB", (40, 30), "red").save(tmp_path / "bigexif.png", exif=exif.tobytes())
    done = rmcli("remove", "bigexif.png", "-o", "out", "--format", "jpg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.decode().splitlines() == [
        "rmcli: note: bigexif.png: EXIF metadata dropped: 70,044 bytes is more than JPEG "
        "holds (65,527); use --format png or webp to keep it"
    ]
    with Image.open(tmp_path / "out" / "bigexif.jpg") as out:
        out.load()
        assert out.size == (40, 30) and "exif" not in out.info


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_a_zero_size_image_given_to_the_api_is_an_input_error(remover, size):
    with pytest.raises(InputError, match=rf"image has no pixels \({size[0]}x{size[1]}\)"):
        remover.remove(Image.new("RGB", size))
