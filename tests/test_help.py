"""``--help`` reads well: a page of grouped options with examples, the rest one flag away."""

from __future__ import annotations

import re

import pytest
from helpers import rmcli

from rmcli.cli.help import EXAMPLES

WIDE = {"COLUMNS": "100"}
RAW_TYPES = re.compile(r"<(list|str|int|float|bool|tuple)[^>]*>")


def _help(*args: str, env: dict | None = None) -> str:
    done = rmcli(*args, env={**WIDE, **(env or {})})
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def test_remove_help_fits_a_screen_with_panels_and_examples():
    out = _help("remove", "--help")
    lines = out.splitlines()
    assert len(lines) <= 60, f"{len(lines)} lines:\n{out}"
    for panel in ("Output", "Model", "Execution"):
        assert re.search(rf"╭─ {panel} ─", out), panel
    for example in EXAMPLES["remove"]:
        assert example.split("  #")[0].rstrip() in out
    assert "-o, --output FILE|DIR|-" in out
    assert "--help-all" in out


@pytest.mark.parametrize(
    "option",
    ["--device-id", "--gpu-mem-limit", "--openvino-streams", "--precision", "--scheduler",
     "--mask-error-budget", "--graph-optimization"],
)  # fmt: skip
def test_options_for_other_backends_and_commands_wait_behind_help_all(option):
    assert option not in _help("remove", "--help")
    assert option in _help("remove", "--help-all")
    assert option in _help("remove", "--help", env={"RMCLI_HELP_ALL": "1"})


def test_help_all_gives_each_setting_its_full_help_and_variable():
    flat = " ".join(_help("remove", "--help-all").replace("│", " ").split())
    assert "[default: 2; 1-64; env: RMCLI_INFLIGHT]" in flat
    assert "(unset: the cores this process may use;" in flat


def test_serve_help_leaves_out_remove_only_options():
    out = _help("serve", "--help")
    assert "--port N" in out and "--model" in out
    assert "--format" not in out and "--recursive" not in out


@pytest.mark.parametrize("command", sorted(c for c in EXAMPLES if c))
def test_every_command_shows_its_examples_and_no_raw_types(command):
    assert 3 <= len(EXAMPLES[command]) <= 5
    out = _help(*command.split(), "--help")
    for example in EXAMPLES[command]:
        assert example.split("  #")[0].rstrip()[:60] in out, example
    assert not RAW_TYPES.search(out), RAW_TYPES.search(out)


def test_rembg_commands_show_the_defaults_they_run_with():
    for command in ("i", "p"):
        out = _help(command, "--help")
        assert re.search(r"-m, --model NAME .*\[default: u2netp\]", out)
        assert re.search(r"-af, --alpha-matting-foreground-threshold 0-255 .*\[default: 240\]", out)
        assert re.search(r"-ae, --alpha-matting-erode-size PX .*\[default: 10\]", out)


def test_v_prints_the_settings_this_run_uses(u2netp_path, tmp_path):
    from helpers import EXAMPLES as PHOTOS

    done = rmcli("remove", str(PHOTOS / "car-1.jpg"), "-o", str(tmp_path), "-v")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    shown = re.findall(r"^  (\w+) = ", err.split("backend cpu-pinned")[0], flags=re.M)
    assert {"model", "backend", "intra_threads", "output_format"} <= set(shown)
    for unused in ("serve_port", "device_id", "openvino_streams", "dask_scheduler",
                   "mask_error_budget", "crop_margin", "alpha_matting_erode_size"):  # fmt: skip
        assert unused not in shown
    assert "more that it does not use: rmcli config list" in err
    done = rmcli("remove", str(PHOTOS / "car-1.jpg"), "-o", str(tmp_path), "-v", "--crop")
    assert "crop_margin = 0 (default)" in done.stderr.decode()
