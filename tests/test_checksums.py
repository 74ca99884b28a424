"""Weights checksums: md5 and sha256, malformed digests, files used in place."""

from __future__ import annotations

import hashlib

import pytest
from helpers.httpserve import serving

from rmcli.contracts.model import Weights
from rmcli.engine.weights import WeightsStore
from rmcli.errors import ModelError

DATA = b"weights bytes " * 1000
DIGESTS = {name: hashlib.new(name, DATA).hexdigest() for name in ("md5", "sha256")}


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_fetched_weights_are_checked_with_their_algorithm(tmp_path, algorithm):
    (tmp_path / "good.bin").write_bytes(DATA)
    (tmp_path / "bad.bin").write_bytes(DATA[:-1])
    with serving(tmp_path) as base:
        urls = (f"{base}/bad.bin", f"{base}/good.bin")
        spec = Weights("w.onnx", urls=urls, **{algorithm: DIGESTS[algorithm]})
        store = WeightsStore(tmp_path / "cache")
        assert store.ensure(spec).read_bytes() == DATA
        assert spec.checksum == f"{algorithm}:{DIGESTS[algorithm]}"
        only_bad = Weights("v.onnx", urls=urls[:1], **{algorithm: DIGESTS[algorithm]})
        pattern = f"checksum {algorithm}:[0-9a-f]+ is not {algorithm}:"
        with pytest.raises(ModelError, match=pattern):
            store.ensure(only_bad)
    assert not (tmp_path / "cache" / "v.onnx").exists()


def test_sha256_is_preferred_when_both_are_given(tmp_path):
    (tmp_path / "good.bin").write_bytes(DATA)
    spec = Weights("w.onnx", md5="0" * 32, sha256=DIGESTS["sha256"])
    assert spec.checksum.startswith("sha256:")
    store = WeightsStore(tmp_path / "cache")
    store.import_file(tmp_path / "good.bin", spec)
    assert store.is_valid(spec)


@pytest.mark.parametrize("fields", [{"md5": "abc"}, {"sha256": "g" * 64}, {"md5": "0" * 64}])
def test_malformed_digests_are_refused_when_declared(fields):
    with pytest.raises(ValueError, match="hex digits"):
        Weights("w.onnx", **fields)


def test_weights_used_in_place_are_checked_but_never_copied(tmp_path):
    local = tmp_path / "pkg" / "net.onnx"
    local.parent.mkdir()
    local.write_bytes(DATA)
    store = WeightsStore(tmp_path / "cache")
    spec = Weights("net.onnx", sha256=DIGESTS["sha256"], path=str(local))
    assert store.ensure(spec) == local
    assert not (tmp_path / "cache").exists()
    local.write_bytes(DATA + b"x")
    with pytest.raises(ModelError, match=f"{local} has the wrong checksum"):
        store.ensure(spec)
    local.unlink()
    with pytest.raises(ModelError, match=f"{local} does not exist"):
        store.ensure(spec)
