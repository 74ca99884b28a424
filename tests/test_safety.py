"""Safety: no shell, no path escapes from the models folder, no lenient decoding."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import ROOT, rmcli

from rmcli.contracts.model import Weights
from rmcli.engine.weights import WeightsStore
from rmcli.errors import ModelError

FORBIDDEN = {
    r"shell\s*=\s*True": "a shell would interpret user-supplied strings",
    r"\bos\.(system|popen|exec\w*|spawn\w*)\s*\(": "runs a command through a shell or in place",
    r"LOAD_TRUNCATED_IMAGES\s*=\s*True": "truncated inputs must be errors, not grey images",
    r"\beval\s*\(|\bexec\s*\(": "evaluates strings as code",
}


def test_package_source_never_uses_a_shell_or_lenient_decoding():
    sources = sorted((ROOT / "rmcli").rglob("*.py"))
    assert len(sources) > 10
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()} ({why})"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for pattern, why in FORBIDDEN.items()
        if re.search(pattern, line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "name", ["../escape.onnx", "..", "/etc/passwd", "a/../../b.onnx", "dir/w.onnx", "w\0.onnx"]
)
def test_weights_file_names_cannot_leave_the_models_folder(tmp_path, name):
    store = WeightsStore(tmp_path / "models")
    with pytest.raises(ModelError, match="not a plain file name"):
        store.path_for(Weights(filename=name, md5="0" * 32))
    with pytest.raises(ModelError, match="not a plain file name"):
        store.ensure(Weights(filename=name, md5="0" * 32, urls=("http://127.0.0.1:9/w",)))
    assert not Path("/escape.onnx").exists() and not (tmp_path / "escape.onnx").exists()


@pytest.mark.slow  # a subprocess
def test_a_model_name_from_configuration_is_only_a_registry_key(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('model = "../../u2netp"\n')
    done = rmcli("remove", "x.jpg", env={"RMCLI_CONFIG": str(config)})
    assert done.returncode == 2
    assert "unknown model '../../u2netp'" in done.stderr.decode()
    assert len(done.stderr.decode().splitlines()) == 1
