"""Every unusable input gets one line `PATH: reason`, the batch goes on, odd valid files work."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFile
from torture import build_invalid, build_valid, drop_root_file_override, photo, png_header_only

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
