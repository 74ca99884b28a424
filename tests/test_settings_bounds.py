"""Every numeric setting has documented bounds, enforced the same way at every layer."""

from __future__ import annotations

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcli.config.settings import SETTINGS, resolve
from rmcli.errors import ConfigError

pytestmark = pytest.mark.fast  # the plumbing tier: `pytest -m fast`, seconds

NUMERIC = [key for key, s in SETTINGS.items() if s.type_name in ("integer", "integer|auto")]
VALUES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=12),
    st.sampled_from(["auto", "1e3", " 7 ", "0x10", "", "-0", "99999999999999999999"]),
)


def test_every_numeric_setting_has_bounds():
    for key in NUMERIC:
        setting = SETTINGS[key]
        if setting.type_name == "integer|auto":
            continue  # bounded inside its parser (1..MAX_THREADS or auto)
        assert setting.minimum is not None and setting.maximum is not None, key


def _layer(key, raw, layer, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("")
    if layer == "file":
        path.write_text(tomli_w.dumps({key: raw}))
        return resolve(env={}, path=path), f"file {path}"
    if layer == "env":
        return resolve(env={SETTINGS[key].env: str(raw)}, path=path), SETTINGS[key].env
    flag = (raw, f"flag {SETTINGS[key].option}")  # as rmcli remove passes it
    return resolve(flags={key: flag}, env={}, path=path), SETTINGS[key].option


@pytest.mark.parametrize("layer", ["file", "env", "flag"])
@settings(max_examples=40, deadline=None, derandomize=True)
@given(key=st.sampled_from(NUMERIC), raw=VALUES)
def test_out_of_range_values_are_one_config_error_naming_their_source(
    layer, key, raw, tmp_path_factory
):
    tmp_path = tmp_path_factory.mktemp("bounds")
    setting = SETTINGS[key]
    try:
        resolved, source = _layer(key, raw, layer, tmp_path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        where = {"file": "config.toml", "env": setting.env, "flag": setting.option}[layer]
        assert where in message, message
        return
    value = resolved[key]
    if value == "auto" or (value is None and setting.default is None and raw == ""):
        return  # an empty environment variable is no value: the default (unset) stays
    assert isinstance(value, int)
    low = setting.minimum if setting.minimum is not None else 1
    high = setting.maximum if setting.maximum is not None else 256
    assert low <= value <= high
