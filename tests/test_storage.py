"""Inputs and outputs as fsspec URLs: memory://, file://, and a clear error for a missing driver."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from helpers import DATA, EXAMPLES, alpha_of, rmcli
from PIL import Image

from rmcli import Remover

fsspec = pytest.importorskip("fsspec")


def test_reads_from_and_writes_to_memory_storage(u2netp_path):
    fs = fsspec.filesystem("memory")
    base = f"rmcli-{uuid.uuid4().hex[:8]}"
    photos = [EXAMPLES / "car-1.jpg", EXAMPLES / "animal-2.jpg"]
    fs.pipe_file(f"/{base}/in/{photos[0].name}", photos[0].read_bytes())
    fs.pipe_file(f"/{base}/in/more/{photos[1].name}", photos[1].read_bytes())
    fs.pipe_file(f"/{base}/in/broken.png", b"not a png")

    results = Remover().map([f"memory://{base}/in"], f"memory://{base}/out", recursive=True)
    by_label = {r.job.label: r for r in results}

    assert by_label[f"memory:///{base}/in/broken.png"].error.endswith(
        ": not an image (or a format Pillow cannot read)"
    )
    assert sorted(fs.find(f"/{base}/out")) == [
        f"/{base}/out/car-1.png",
        f"/{base}/out/more/animal-2.png",
    ]
    for photo, written in zip(photos, ["car-1.png", "more/animal-2.png"], strict=True):
        assert by_label[f"memory:///{base}/in/{written.replace('.png', '.jpg')}"].error is None
        ours = Image.open(io.BytesIO(fs.cat_file(f"/{base}/out/{written}")))
        reference = alpha_of(DATA / "rembg-u2netp" / f"{photo.stem}.alpha.png")
        assert np.abs(alpha_of(ours) - reference).mean() <= 0.5
    assert fs.cat_file(f"/{base}/in/{photos[0].name}") == photos[0].read_bytes()


def test_cli_takes_file_urls_and_prints_the_output_url(u2netp_path, tmp_path):
    source = f"file://{EXAMPLES / 'girl-1.jpg'}"
    done = rmcli("remove", source, "-o", f"file://{tmp_path}/out")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == [f"file://{tmp_path}/out/girl-1.png"]
    assert Image.open(tmp_path / "out" / "girl-1.png").mode == "RGBA"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["girl-1.png"]


def test_a_url_without_its_filesystem_package_is_a_usage_error(tmp_path):
    done = rmcli("remove", str(EXAMPLES / "girl-1.jpg"), "-o", "zzfs://bucket/out")
    assert done.returncode == 2
    assert "zzfs://bucket/out" in done.stderr.decode()
