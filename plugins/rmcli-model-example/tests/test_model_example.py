"""The example plugin, installed with pip, as a user meets it: listed, verified, removing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip(
    "rmcli_model_example", reason="not installed: pip install -e plugins/rmcli-model-example"
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No user config and an empty weights cache: the plugin needs neither."""
    for name in list(os.environ):
        if name.startswith("RMCLI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RMCLI_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("RMCLI_MODELS_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("RMCLI_OFFLINE", "1")


def rmcli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmcli", *args], capture_output=True, text=True)


def product_shot(path):
    """A dark bottle on a white sweep with a light grey shadow, like a studio photo."""
    image = Image.new("RGB", (400, 300), (252, 252, 250))
    draw = ImageDraw.Draw(image)
    draw.ellipse((150, 240, 330, 270), fill=(238, 238, 236))  # soft shadow: background
    draw.rectangle((180, 60, 240, 250), fill=(30, 80, 40))  # the bottle
    image.save(path)
    return path


def test_the_plugin_model_is_listed_with_its_packaged_weights():
    done = rmcli("models", "list", "--json")
    assert done.returncode == 0, done.stderr
    row = {r["name"]: r for r in json.loads(done.stdout)}["studio-white"]
    assert row["state"] == "in place" and row["path"].endswith("studio-white.onnx")
    assert row["checksum"].startswith("sha256:") and row["size"] > 0
    assert "model-example" in rmcli("plugins").stdout


def test_it_removes_a_white_background_offline(tmp_path):
    photo = product_shot(tmp_path / "bottle.jpg")
    done = rmcli("remove", str(photo), "--model", "studio-white", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    alpha = np.asarray(Image.open(tmp_path / "out" / "bottle.png").getchannel("A"))
    assert alpha.shape == (300, 400)
    assert (alpha[80:230, 190:230] == 255).all()  # the bottle is kept
    assert (alpha[:40] == 0).all() and (alpha[255:265, 160:175] == 0).all()  # sweep, shadow
    assert not (tmp_path / "empty-cache").exists()  # weights were used in place


def test_the_python_api_and_the_checksum_guard(tmp_path):
    from rmcli_model_example import MODEL

    from rmcli import Remover

    mask = Remover(model="studio-white").mask(Image.new("RGB", (64, 48), (20, 20, 20)))
    assert mask.size == (64, 48) and np.asarray(mask).min() == 255  # all subject: opaque

    import dataclasses

    from rmcli.engine.weights import WeightsStore
    from rmcli.errors import ModelError

    tampered = tmp_path / "studio-white.onnx"
    tampered.write_bytes(open(MODEL.weights.path, "rb").read() + b"\0")
    weights = dataclasses.replace(MODEL.weights, path=str(tampered))
    with pytest.raises(ModelError, match="wrong checksum"):
        WeightsStore(tmp_path / "cache").ensure(weights)
