"""rembg's commands in rmcli: ``i`` and ``p`` write rembg's file names with rmcli's masks,
rembg's flags are mapped or refused in one line, ``p -d`` deletes each input once written.
"""

from __future__ import annotations

import shutil

import numpy as np
from helpers import EXAMPLES, GIRL, alpha_of, rmcli
from PIL import Image


def test_rembg_i_and_p_write_rembgs_names_with_rmclis_masks(u2netp_path, tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("girl-1.jpg", "animal-2.jpg"):
        shutil.copy(EXAMPLES / name, tmp_path / "in" / name)
    done = rmcli("p", "-m", "u2netp", str(tmp_path / "in"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["animal-2.png", "girl-1.png"]
    done = rmcli("i", "-m", "u2netp", str(GIRL), str(tmp_path / "i.png"))
    assert done.returncode == 0, done.stderr
    reference = rmcli("remove", str(GIRL), "-o", str(tmp_path / "ref"))
    assert reference.returncode == 0
    mine = alpha_of(tmp_path / "ref" / "girl-1.png")
    assert np.array_equal(alpha_of(tmp_path / "i.png"), mine)
    assert np.array_equal(alpha_of(tmp_path / "out" / "girl-1.png"), mine)


def test_rembg_flags_map_or_are_refused_in_one_line(u2netp_path, tmp_path):
    done = rmcli("i", str(GIRL), str(tmp_path / "red.png"), "-bgc", "255", "0", "0", "255")
    assert done.returncode == 0, done.stderr
    corner = Image.open(tmp_path / "red.png").convert("RGBA").getpixel((0, 0))
    assert corner == (255, 0, 0, 255)
    for flags, reason in (
        (["-dc"], "-dc (decontaminate) is rembg-only"),
        (["-x", '{"sam_prompt": []}'], "-x sam_prompt: not supported by rmcli"),
        (["-m", "sam"], "unknown model 'sam'"),
    ):
        done = rmcli("i", str(GIRL), str(tmp_path / "x.png"), *flags)
        err = done.stderr.decode().strip().splitlines()
        assert done.returncode == 2 and len(err) == 1 and reason in err[0], err


def test_p_d_deletes_each_input_once_written(u2netp_path, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(GIRL, tmp_path / "in" / "g.jpg")
    done = rmcli("p", "-d", str(tmp_path / "in"), str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "g.png").is_file() and not (tmp_path / "in" / "g.jpg").exists()
