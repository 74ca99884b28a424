"""`rmcli models` import/verify/rm/list, offline use and custom weights, as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
from helpers import EXAMPLES, alpha_of
from helpers import rmcli_here as rmcli
from PIL import Image

from rmcli import Remover
from rmcli.contracts.model import Weights
from rmcli.engine.weights import WeightsStore

PHOTO = EXAMPLES / "animal-1.jpg"


def listed(models_dir) -> dict[str, dict]:
    done = rmcli("models", "list", "--json", env={"RMCLI_MODELS_DIR": str(models_dir)})
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_import_checks_the_checksum_of_a_known_model(u2netp_path, tmp_path):
    cache = tmp_path / "cache"
    env = {"RMCLI_MODELS_DIR": str(cache)}
    mine = shutil.copy(u2netp_path, tmp_path / "downloaded-elsewhere.onnx")
    done = rmcli("models", "import", str(mine), "--as", "u2netp", env=env)
    assert done.returncode == 0, done.stderr
    assert (cache / "u2netp.onnx").read_bytes() == u2netp_path.read_bytes()
    row = listed(cache)["u2netp"]
    assert row["state"] == "cached" and row["size"] == u2netp_path.stat().st_size

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(u2netp_path.read_bytes()[:1000])
    done = rmcli("models", "import", str(truncated), "--as", "u2net", env=env)
    assert done.returncode == 2
    assert f"{truncated}: checksum md5:" in done.stderr.decode()
    assert not (cache / "u2net.onnx").exists() and listed(cache)["u2net"]["state"] == "not cached"

    done = rmcli("models", "import", str(mine), "--as", "my-net", env=env)
    assert done.returncode == 2 and "unknown model 'my-net'" in done.stderr.decode()
    assert "--model-path" in done.stderr.decode()


def test_verify_rehashes_and_rm_deletes(u2netp_path, tmp_path):
    cache = tmp_path / "cache"
    env = {"RMCLI_MODELS_DIR": str(cache)}
    assert rmcli("models", "import", str(u2netp_path), "--as", "u2netp", env=env).returncode == 0
    assert rmcli("remove", str(PHOTO), "-o", str(tmp_path), env=env).returncode == 0  # stamps it
    done = rmcli("models", "verify", env=env)
    assert done.returncode == 0, done.stderr
    assert f"u2netp                   ok   {cache / 'u2netp.onnx'}" in done.stdout.decode()

    cached = cache / "u2netp.onnx"
    before = cached.stat()
    data = bytearray(cached.read_bytes())
    data[5000] ^= 0xFF  # bit rot: same size, same mtime, so only a re-hash can tell
    cached.write_bytes(bytes(data))
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = rmcli("models", "verify", env=env)
    assert done.returncode == 1
    assert f"u2netp                   BAD  {cached}: checksum md5:" in done.stdout.decode()
    assert ", 1 bad" in done.stderr.decode()

    done = rmcli("models", "rm", "u2netp", env=env)
    assert done.returncode == 0 and done.stdout.decode().strip() == f"removed {cached}"
    assert not cached.exists() and listed(cache)["u2netp"]["state"] == "not cached"
    done = rmcli("models", "rm", "u2netp", env=env)
    assert done.returncode == 2 and "u2netp.onnx is not cached" in done.stderr.decode()


def test_offline_never_downloads_and_says_what_to_place_where(tmp_path):
    cache = tmp_path / "cache"
    for how in (["--offline"], []):
        env = {"RMCLI_MODELS_DIR": str(cache), **({} if how else {"RMCLI_OFFLINE": "1"})}
        done = rmcli("remove", str(PHOTO), "--model", "u2net", *how, "-o", str(tmp_path), env=env)
        assert done.returncode == 2
        message = done.stderr.decode().strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert "offline mode forbids downloading" in message
        assert f"Place the file at {cache / 'u2net.onnx'}" in message
        assert "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx" in message
        assert "rmcli models import FILE --as u2net" in message
        assert not (tmp_path / "animal-1.png").exists()


def test_offline_takes_weights_from_rembgs_per_model_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("U2NET_HOME")
    monkeypatch.setenv("REMBG_HOME", str(tmp_path / "rembg"))
    data = b"weights" * 100
    (tmp_path / "rembg" / "models" / "w").mkdir(parents=True)
    (tmp_path / "rembg" / "models" / "w" / "w.onnx").write_bytes(data)
    spec = Weights("w.onnx", sha256=hashlib.sha256(data).hexdigest())
    store = WeightsStore(tmp_path / "cache", offline=True)
    assert store.ensure(spec).read_bytes() == data


def test_custom_weights_under_another_name_give_the_u2netp_mask(u2netp_path, tmp_path):
    custom = shutil.copy(u2netp_path, tmp_path / "my-finetune.onnx")
    ours = rmcli(
        "remove",
        str(PHOTO),
        "--model-path",
        str(custom),
        "--model-family",
        "u2net",
        "--offline",
        "-o",
        str(tmp_path / "custom"),
    )
    assert ours.returncode == 0, ours.stderr
    reference = rmcli("remove", str(PHOTO), "--model", "u2netp", "-o", str(tmp_path / "builtin"))
    assert reference.returncode == 0, reference.stderr
    a = np.asarray(Image.open(tmp_path / "custom" / "animal-1.png"))
    b = np.asarray(Image.open(tmp_path / "builtin" / "animal-1.png"))
    assert np.array_equal(a, b) and 0 < a[..., 3].mean() < 255

    api = Remover(model_path=custom, model_family="u2net").mask(PHOTO)
    assert np.array_equal(np.asarray(api), b[..., 3])


def test_custom_weights_errors_name_the_file(u2netp_path, tmp_path):
    custom = shutil.copy(u2netp_path, tmp_path / "mine.onnx")
    cases = [
        (["--model-path", str(custom)], "needs --model-family"),
        (["--model-path", str(custom), "--model-family", "isnet"], "[1, 3, 320, 320]"),
        (["--model-path", str(tmp_path / "gone.onnx"), "--model-family", "u2net"], "gone.onnx"),
        (["--model-path", str(custom), "--model-family", "sam"], "is not one of u2net"),
    ]
    for flags, expected in cases:
        done = rmcli("remove", str(PHOTO), *flags, "-o", str(tmp_path))
        message = done.stderr.decode()
        assert done.returncode == 2, message
        assert expected in message and "Traceback" not in message
        assert len(message.strip().splitlines()) == 1


def test_added_model_is_used_by_name_everywhere_until_removed(u2netp_path, tmp_path):
    custom = shutil.copy(u2netp_path, tmp_path / "my-finetune.onnx")
    digest = hashlib.sha256(custom.read_bytes()).hexdigest()
    done = rmcli("models", "add", "mine", str(custom), "--family", "u2net", "--sha256", digest)
    assert done.returncode == 0, done.stderr
    said = done.stdout.decode()
    assert "added mine: u2net family, input 320x320" in said and f"sha256:{digest}" in said
    row = listed(tmp_path / "cache")["mine"]
    assert row["custom"] and row["family"] == "u2net" and row["path"] == str(custom)
    assert row["size"] == custom.stat().st_size and row["state"] == "in place"
    assert not listed(tmp_path / "cache")["u2netp"]["custom"]
    assert "(custom, u2net)" in rmcli("models", "list").stdout.decode()

    reference = rmcli("remove", str(PHOTO), "-m", "u2netp", "-o", str(tmp_path / "builtin"))
    assert reference.returncode == 0, reference.stderr
    expected = np.asarray(Image.open(tmp_path / "builtin" / "animal-1.png"))
    ours = rmcli("remove", str(PHOTO), "-m", "mine", "-o", str(tmp_path / "custom"))
    assert ours.returncode == 0, ours.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "custom" / "animal-1.png")), expected)
    compat = rmcli("i", "-m", "mine", str(PHOTO), str(tmp_path / "i.png"))
    assert compat.returncode == 0, compat.stderr
    rembg_style = np.asarray(Image.open(tmp_path / "i.png"))  # rembg's premultiplied colour
    assert np.array_equal(rembg_style[..., 3], expected[..., 3])
    assert np.array_equal(np.asarray(Remover(model="mine").mask(PHOTO)), expected[..., 3])

    done = rmcli("models", "remove", "mine")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == f"forgot mine (the file {custom} is kept)"
    assert custom.is_file()
    gone = rmcli("remove", str(PHOTO), "-m", "mine", "-o", str(tmp_path / "after"))
    assert gone.returncode == 2 and "unknown model 'mine'" in gone.stderr.decode()
    again = rmcli("models", "remove", "mine")
    assert again.returncode == 2 and "'mine' is not a custom model" in again.stderr.decode()


def test_added_model_is_served_by_name(u2netp_path, tmp_path):
    from serving import car_bytes, start_server

    folder = tmp_path / "serve"
    folder.mkdir()
    custom = shutil.copy(u2netp_path, tmp_path / "mine.onnx")
    env = {"RMCLI_CONFIG": str(folder / "config.toml")}
    assert rmcli("models", "add", "mine", str(custom), "--family", "u2net", env=env).returncode == 0
    server = start_server(folder, env={"RMCLI_SERVE_WARMUP": "false"})
    try:
        with server.client() as client:
            answers = [
                client.post("/api/remove", files={"file": ("c.jpg", car_bytes())}, data=data)
                for data in ({"model": "mine"}, {"model": "u2netp"})
            ]
    finally:
        assert server.stop() == 0, server.log_text()
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    assert answers[0].content == answers[1].content


def test_models_add_refuses_bad_input_in_one_line(u2netp_path, tmp_path):
    custom = shutil.copy(u2netp_path, tmp_path / "mine.onnx")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a network")
    flat = tmp_path / "flat.onnx"
    _write_rank2_model(flat)
    cases = [
        (["a", str(tmp_path / "gone.onnx"), "--family", "u2net"], "gone.onnx: no such file"),
        (["a", str(not_onnx), "--family", "u2net"], "not an ONNX model"),
        (["a", str(flat), "--family", "u2net"], "input has rank 2"),
        (["a", str(custom), "--family", "sam"], "unknown family 'sam'; one of u2net"),
        (["u2netp", str(custom), "--family", "u2net"], "'u2netp' is a catalogue model"),
        (["a", str(custom), "--family", "u2net", "--sha256", "0" * 64], "has the wrong checksum"),
        (["a", str(custom), "--family", "u2net", "--input-size", "1024x1024"], "not 1024x1024"),
        (["a/b", str(custom), "--family", "u2net"], "model name 'a/b'"),
    ]
    for args, expected in cases:
        done = rmcli("models", "add", *args)
        message = done.stderr.decode()
        assert done.returncode == 2, (args, message)
        assert expected in message and "Traceback" not in message, message
        assert len(message.strip().splitlines()) == 1, message
    config = Path(os.environ["RMCLI_CONFIG"])
    assert not config.exists() or "[models" not in config.read_text()


def _write_rank2_model(path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "flat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_added_url_model_is_fetched_into_the_cache_and_checked(u2netp_path, tmp_path):
    from helpers.httpserve import serving

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(u2netp_path, site / "net.onnx")
    (site / "notes.onnx").write_text("not a network")
    digest = hashlib.sha256(u2netp_path.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    env = {"RMCLI_MODELS_DIR": str(cache)}
    with serving(site) as base:
        done = rmcli("models", "add", "web", f"{base}/net.onnx", "--family", "u2net",
                     "--sha256", digest, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        bad = rmcli("models", "add", "junk", f"{base}/notes.onnx", "--family", "u2net", env=env)
    assert f"from {base}/net.onnx" in done.stdout.decode()
    assert (cache / "custom-web.onnx").read_bytes() == u2netp_path.read_bytes()
    assert listed(cache)["web"]["state"] == "cached"
    assert bad.returncode == 2 and "not an ONNX model" in bad.stderr.decode()
    assert not (cache / "custom-junk.onnx").exists()  # the useless download is not kept
    ours = rmcli("remove", str(PHOTO), "-m", "web", "--offline", "-o", str(tmp_path), env=env)
    assert ours.returncode == 0, ours.stderr
    reference = rmcli("remove", str(PHOTO), "-o", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr
    assert np.array_equal(
        alpha_of(tmp_path / "animal-1.png"), alpha_of(tmp_path / "ref" / "animal-1.png")
    )


DOWNLOADED_MODEL = """
import os

from rmcli import Model, Weights, hookimpl


@hookimpl
def register_models(register):
    weights = Weights("served.onnx", sha256=os.environ["SERVED_SHA256"],
                      urls=(os.environ["SERVED_URL"],), size=int(os.environ["SERVED_SIZE"]))
    register(Model("served", "served on loopback by the test", weights))
"""


def test_a_weights_download_shows_a_progress_bar_on_a_terminal(tmp_path):
    import hashlib
    import http.server
    import pty
    from functools import partial

    from test_plugins import install

    served = tmp_path / "www"
    served.mkdir()
    payload = os.urandom(3 << 20)
    (served / "served.onnx").write_bytes(payload)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        **install(tmp_path, "rmcli_served", DOWNLOADED_MODEL),
        "SERVED_SHA256": hashlib.sha256(payload).hexdigest(),
        "SERVED_URL": f"http://127.0.0.1:{server.server_address[1]}/served.onnx",
        "SERVED_SIZE": str(len(payload)),
        "RMCLI_MODELS_DIR": str(tmp_path / "models"),
        "COLUMNS": "120",
    }
    parent, child = pty.openpty()  # stderr is a terminal, as for a user
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rmcli", "models", "pull", "served"],
            stdout=subprocess.PIPE, stderr=child, env=env, timeout=120,
        )  # fmt: skip
        os.close(child)
        screen = b""
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
    finally:
        server.shutdown()
        os.close(parent)
    assert done.returncode == 0, screen.decode(errors="replace")
    text = screen.decode(errors="replace")
    assert "fetching served.onnx from http://127.0.0.1" in text
    assert re.search(r"\d+\.\d/3\.1 MB", text), text  # the bar: bytes done of the total
    assert (tmp_path / "models" / "served.onnx").read_bytes() == payload
