"""Plugin discovery through real entry points, as `pip install` would register them."""

from __future__ import annotations

import json
import textwrap

from helpers import EXAMPLES, rmcli

PLUGIN = """
from dataclasses import replace

from rmcli import Backend, hookimpl


class OneThread(Backend):
    name = "one-thread"
    summary = "test backend: a single intra-op thread"

    def adjust_layout(self, layout, settings):
        return replace(layout, intra_threads=1)


@hookimpl
def register_backends(register):
    register(OneThread())


@hookimpl
def adjust_session(plan):
    plan.options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    print(f"adjusted {plan.backend.name} for {plan.model.name}", flush=True)
"""


def install(site, name: str, source: str, version: str = "1.2.3") -> dict:
    """Lay out a module and its dist-info the way pip does; return env for a subprocess."""
    (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[rmcli]\n{name} = {name}\n")
    return {"PYTHONPATH": str(site)}


def test_builtins_are_ordinary_plugins():
    done = rmcli("plugins", "--json")
    assert done.returncode == 0, done.stderr
    hooks = {p["name"]: p["hooks"] for p in json.loads(done.stdout)}
    assert "register_backends" in hooks["rmcli.builtins.cpu_pinned"]
    assert "register_models" in hooks["rmcli.builtins.u2net_models"]


def test_an_installed_plugin_adds_a_backend_that_removes_backgrounds(u2netp_path, tmp_path):
    env = install(tmp_path, "rmcli_onethread", PLUGIN)
    listed = json.loads(rmcli("plugins", "--json", env=env).stdout)
    mine = next(p for p in listed if p["name"] == "rmcli_onethread")
    assert mine["version"] == "1.2.3" and not mine["builtin"]
    assert mine["hooks"] == ["adjust_session", "register_backends"]
    assert "one-thread" in rmcli("backends", env=env).stdout.decode()
    out = tmp_path / "out"
    done = rmcli(
        "remove", str(EXAMPLES / "car-1.jpg"), "--backend", "one-thread", "-o", str(out), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "adjusted one-thread for u2netp" in done.stdout.decode()
    assert (out / "car-1.png").is_file()


def test_a_plugin_that_fails_to_import_is_named_once_and_the_rest_work(u2netp_path, tmp_path):
    env = install(tmp_path, "rmcli_broken", "raise ImportError('needs libfoo')\n")
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.decode().splitlines() if "rmcli_broken" in line]
    assert len(warnings) == 1 and "needs libfoo" in warnings[0]
    assert (tmp_path / "out" / "car-1.png").is_file()
