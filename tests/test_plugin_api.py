"""The plugin surface: everything importable from ``rmcli``; hooks called through pluggy."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, rmcli
from test_plugins import install

import rmcli as api

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGINS = [
    ROOT / "plugins" / "rmcli-lowmem" / "src" / "rmcli_lowmem" / "__init__.py",
    ROOT / "plugins" / "rmcli-model-example" / "rmcli_model_example" / "__init__.py",
]


def test_every_public_name_resolves():
    for name in api.__all__:
        assert getattr(api, name) is not None, name


@pytest.mark.parametrize("path", EXAMPLE_PLUGINS, ids=lambda p: p.parts[-3])
def test_example_plugins_import_only_the_top_level_api(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rmcli."):
            pytest.fail(f"{path.name} imports {node.module}: use `from rmcli import ...`")
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("rmcli.") for a in node.names)


def test_importing_rmcli_stays_light():
    heavy = "('onnxruntime', 'numpy', 'PIL', 'pluggy')"
    code = f"import sys, rmcli; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


MISSPELLED = """
from rmcli import Backend, hookimpl


@hookimpl
def register_backend(register):  # the hook is register_backends
    register(Backend())
"""

WRAPPER_AND_BAD = """
from rmcli import Backend, hookimpl


class Fine(Backend):
    name = "fine-one"
    summary = "registered next to junk"


@hookimpl
def register_backends(register):
    register(42)
    register(None)
    register(Fine())


@hookimpl(wrapper=True)
def register_models(register):
    print("wrapper saw register_models", flush=True)
    return (yield)
"""


def test_a_misspelled_hook_is_reported_naming_its_plugin(tmp_path):
    env = install(tmp_path, "rmcli_typo", MISSPELLED)
    done = rmcli("backends", env=env)
    assert done.returncode == 0
    err = done.stderr.decode()
    assert "plugin 'rmcli_typo' is not used" in err and "register_backend" in err
    assert "cpu-pinned" in done.stdout.decode()


def test_wrong_objects_are_skipped_by_name_and_wrappers_run(tmp_path):
    env = install(tmp_path, "rmcli_junk", WRAPPER_AND_BAD)
    done = rmcli("backends", "--json", env=env)
    assert done.returncode == 0, done.stderr
    names = {row["name"] for row in json.loads(done.stdout)}
    assert {"fine-one", "cpu-pinned"} <= names
    err = done.stderr.decode()
    assert "plugin 'rmcli_junk' registered 42 in register_backends" in err
    assert "registered None" in err
    done = rmcli("models", "list", env=env)
    assert "wrapper saw register_models" in done.stdout.decode()


def test_disabled_plugins_do_not_load(tmp_path):
    env = install(tmp_path, "rmcli_junk", WRAPPER_AND_BAD)
    env["RMCLI_DISABLE_PLUGINS"] = "rmcli_junk, dask_executor"
    done = rmcli("plugins", "--json", env=env)
    names = {p["name"] for p in json.loads(done.stdout)}
    assert "rmcli_junk" not in names and "rmcli.builtins.dask_executor" not in names
    assert "rmcli.builtins.local_executor" in names
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "--executor", "dask", env=env)
    assert done.returncode == 2 and "unknown executor 'dask'" in done.stderr.decode()


def test_debug_traces_hook_calls(tmp_path):
    done = rmcli("backends", env={"RMCLI_DEBUG": "1"})
    assert done.returncode == 0
    assert "register_backends" in done.stderr.decode()  # pluggy's trace, through logging


BREAKS_THE_PLAN = """
from rmcli import hookimpl


@hookimpl
def adjust_session(plan):
    plan.options = None
    plan.providers = 42
"""


def test_a_plugin_breaking_the_session_plan_is_undone_and_named(u2netp_path, tmp_path):
    env = install(tmp_path, "rmcli_breaker", BREAKS_THE_PLAN)
    done = rmcli("remove", str(EXAMPLES / "car-1.jpg"), "-o", str(tmp_path / "out"), env=env)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "plugin 'rmcli_breaker' set plan.options to NoneType" in err
    assert "plugin 'rmcli_breaker' set plan.providers to 42" in err
    assert (tmp_path / "out" / "car-1.png").is_file()


EXITS_AT_IMPORT = "raise SystemExit(7)\n"

AVAILABILITY_RAISES = """
from rmcli import Backend, hookimpl


class Flaky(Backend):
    name = "flaky"
    summary = "its availability check crashes"

    def availability(self):
        raise OSError("driver probe crashed")


@hookimpl
def register_backends(register):
    register(Flaky())
"""


def test_a_plugin_exiting_at_import_or_crashing_in_availability_is_named(tmp_path):
    env = install(tmp_path, "rmcli_exits", EXITS_AT_IMPORT)
    env.update(install(tmp_path, "rmcli_flaky", AVAILABILITY_RAISES))
    done = rmcli("backends", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["flaky"]["available"] is False
    assert "driver probe crashed" in rows["flaky"]["reason"]
    assert rows["cpu-pinned"]["available"] is True
    assert "plugin 'rmcli_exits'" in done.stderr.decode() and "SystemExit" in done.stderr.decode()


SHADOW = """
from rmcli import Backend, hookimpl


class Shadow(Backend):
    name = "cpu-pinned"
    summary = "SHADOW: a third-party cpu-pinned"
    replaces = {replaces}


@hookimpl
def register_backends(register):
    register(Shadow())
"""


def test_a_plugin_shadowing_a_builtin_is_refused_unless_it_says_it_replaces_it(tmp_path):
    def summary_of_cpu_pinned(env):
        done = rmcli("backends", "--json", env=env)
        assert done.returncode == 0, done.stderr
        rows = {row["name"]: row for row in json.loads(done.stdout)}
        return rows["cpu-pinned"]["summary"], done.stderr.decode()

    (tmp_path / "a").mkdir()
    env = install(tmp_path / "a", "rmcli_shadow", SHADOW.format(replaces=False), "2.0")
    summary, err = summary_of_cpu_pinned(env)
    assert not summary.startswith("SHADOW")  # the built-in keeps its name
    assert (
        "backend 'cpu-pinned' of plugin 'rmcli_shadow' (distribution rmcli_shadow 2.0) is not "
        "used: the name belongs to the built-in plugin 'rmcli.builtins.cpu_pinned' "
        f"(distribution rmcli {api.__version__})"
    ) in err
    assert err.count("is not used") == 1

    (tmp_path / "b").mkdir()
    env = install(tmp_path / "b", "rmcli_shadow", SHADOW.format(replaces=True), "2.0")
    summary, err = summary_of_cpu_pinned(env)
    assert summary.startswith("SHADOW") and "is not used" not in err
