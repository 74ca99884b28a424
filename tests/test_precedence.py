"""Related settings resolve as one: a layer that sets one member of a group overrides what
weaker layers set for the others (model/model_path/model_family, backend/precision, the output
format and the -o suffix), and ``-v`` / ``config list --sources`` say what is not in effect."""

from __future__ import annotations

import itertools
import shutil

import pytest
from helpers import EXAMPLES
from helpers import rmcli_here as rmcli
from PIL import Image

from rmcli.cli.remove import format_from_output
from rmcli.config.settings import GROUPS, SETTINGS, resolve

# a value for each member, other than its default
VALUE = {
    "model": "isnet-general-use",
    "model_path": "/weights/mine.onnx",
    "model_family": "isnet",
    "backend": "openvino",
    "precision": "bf16",
}
LAYERS = ("flag", "env", "file")


def _resolve(tmp_path, given: dict[str, tuple[str, str]]):
    """``given``: key -> (layer, value); resolve them through the real layers."""
    flags = {k: v for k, (layer, v) in given.items() if layer == "flag"}
    env = {SETTINGS[k].env: v for k, (layer, v) in given.items() if layer == "env"}
    file = tmp_path / "config.toml"
    file.write_text("".join(f'{k} = "{v}"\n' for k, (layer, v) in given.items() if layer == "file"))
    return resolve(flags, env=env, path=file)


PAIRS = [
    (a, b, high, low)
    for group in GROUPS
    for a, b in itertools.permutations(group.members, 2)
    for high, low in itertools.combinations(LAYERS, 2)
]


@pytest.mark.parametrize(("a", "b", "high", "low"), PAIRS)
def test_a_stronger_layer_for_one_member_decides_the_group(tmp_path, a, b, high, low):
    settings = _resolve(tmp_path, {a: (high, VALUE[a]), b: (low, VALUE[b])})
    assert settings[a] == VALUE[a]
    assert settings.source(a).startswith(high)
    group = next(g for g in GROUPS if a in g.members)
    if a in group.leaders:  # a leader from a stronger layer: b's weaker value is not in effect
        assert settings[b] == SETTINGS[b].default
        assert settings.source(b) == "default"
        note = settings.overridden[b]
        assert VALUE[b] in note and settings.source(a) in note and f"sets {a}" in note
        assert "not in effect" in settings.line(b)
    else:  # a refinement (model_family, precision) applies to the weaker layer's leader
        assert settings[b] == VALUE[b]
        assert settings.source(b).startswith(low)


MEMBER_PAIRS = [pair for g in GROUPS for pair in itertools.permutations(g.members, 2)]


@pytest.mark.parametrize(("a", "b"), MEMBER_PAIRS)
@pytest.mark.parametrize("layer", LAYERS)
def test_members_from_the_same_layer_are_kept_together(tmp_path, a, b, layer):
    settings = _resolve(tmp_path, {a: (layer, VALUE[a]), b: (layer, VALUE[b])})
    assert (settings[a], settings[b]) == (VALUE[a], VALUE[b])
    if b in settings.overridden:  # only model, which custom weights make moot
        assert b == "model" and "model_path is set" in settings.line(b)


@pytest.mark.parametrize(("high", "low"), [("flag", "env"), ("flag", "file"), ("env", "file")])
def test_model_beats_custom_weights_and_family_from_a_weaker_layer(tmp_path, high, low):
    settings = _resolve(
        tmp_path,
        {
            "model": (high, "u2netp"),
            "model_path": (low, VALUE["model_path"]),
            "model_family": (low, "isnet"),
        },
    )
    assert (settings["model"], settings["model_path"], settings["model_family"]) == (
        "u2netp",
        "",
        "",
    )
    assert set(settings.overridden) == {"model_path", "model_family"}


@pytest.mark.parametrize("layer", ["env", "file", "default"])
def test_the_o_suffix_beats_the_format_of_a_weaker_layer(tmp_path, layer):
    given = {"output_format": (layer, "webp")} if layer != "default" else {}
    settings = format_from_output(_resolve(tmp_path, given), str(tmp_path / "cut.jpg"))
    assert settings["output_format"] == "jpg"
    assert settings.source("output_format") == f"-o {tmp_path / 'cut.jpg'}"
    if layer != "default":
        assert "webp" in settings.overridden["output_format"]


def test_format_flag_beats_the_o_suffix_of_the_same_command_line(tmp_path, caplog):
    settings = _resolve(tmp_path, {"output_format": ("flag", "png")})
    kept = format_from_output(settings, str(tmp_path / "cut.webp"))
    assert kept["output_format"] == "png" and kept.source("output_format") == "flag --output-format"
    assert f"-o {tmp_path / 'cut.webp'} is written as png" in caplog.text
    for output in (str(tmp_path), "-", None):  # a folder, stdout, beside the input: no suffix
        assert format_from_output(settings, output) is settings


def test_model_flag_runs_that_model_despite_custom_weights_in_the_config(u2netp_path, tmp_path):
    weights = tmp_path / "custom.onnx"
    shutil.copy(u2netp_path, weights)
    assert rmcli("config", "set", "model_path", str(weights)).returncode == 0
    assert rmcli("config", "set", "model_family", "isnet").returncode == 0
    out = tmp_path / "cut.png"
    done = rmcli("remove", str(EXAMPLES / "girl-1.jpg"), "-m", "u2netp", "-v", "-o", str(out))
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "model u2netp:" in err and "custom:" not in err
    assert f'model_path = "" (default); not in effect: "{weights}" from file' in err
    assert "because flag --model sets model" in err
    listed = rmcli("config", "list", "--sources").stdout.decode()
    assert f'model_path = "{weights}" (file' in listed  # nothing overrides it there


def test_config_set_warns_when_the_value_is_not_in_effect(tmp_path):
    assert rmcli("config", "set", "model_path", "/weights/mine.onnx").returncode == 0
    done = rmcli("config", "set", "model", "u2net")
    assert done.returncode == 0
    assert "warning: model is not in effect: model_path is set" in done.stderr.decode()


def test_config_list_shows_what_the_environment_puts_out_of_effect(tmp_path):
    assert rmcli("config", "set", "model_path", "/weights/mine.onnx").returncode == 0
    done = rmcli("config", "list", "--sources", env={"RMCLI_MODEL": "u2net"})
    lines = done.stdout.decode().splitlines()
    assert 'model = "u2net" (env RMCLI_MODEL)' in lines
    assert any(
        line.startswith('model_path = "" (default); not in effect: "/weights/mine.onnx" from file')
        for line in lines
    )


def test_o_suffix_beats_the_configured_format_and_v_says_so(u2netp_path, tmp_path):
    assert rmcli("config", "set", "output_format", "webp").returncode == 0
    out = tmp_path / "cut.png"
    done = rmcli("remove", str(EXAMPLES / "girl-1.jpg"), "-o", str(out), "-v")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert Image.open(out).format == "PNG"
    assert f'output_format = "png" (-o {out}); not in effect: "webp" from file' in err
