"""Commands that only describe things start instantly: no onnxruntime, numpy or Pillow import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("onnxruntime", "numpy", "PIL")


def imported_modules(*args: str) -> set[str]:
    """Top-level modules a real ``python -X importtime -m rmcli ARGS`` run imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rmcli", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "rmcli" in names  # the report really lists what was imported
    return names


@pytest.mark.parametrize(
    "args",
    [("--help",), ("remove", "--help"), ("backends",), ("models", "list"), ("plugins",)],
    ids=" ".join,
)
def test_describing_commands_import_no_heavy_module(args):
    heavy = imported_modules(*args) & set(HEAVY)
    assert not heavy, f"rmcli {' '.join(args)} imported {sorted(heavy)}"


def command_modules(*args: str) -> set[str]:
    """The ``rmcli.cli`` command modules a run of ``rmcli ARGS`` imported."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        f"sys.argv = ['rmcli', *{list(args)!r}]\n"
        "from rmcli.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    found = set(json.loads(done.stderr.splitlines()[-1]))
    assert "rmcli.cli" in found
    return {name for name in found if name.startswith("rmcli.cli.")} - {
        "rmcli.cli.progress",  # main() shows downloads whatever the command
    }


def test_only_the_command_that_runs_is_built():
    assert command_modules("--help") == set()
    helpers = {"rmcli.cli.help", "rmcli.cli.frames", "rmcli.cli.matting_notice"}  # no other command
    assert command_modules("remove", "--help") == {"rmcli.cli.remove", *helpers}
    assert command_modules("config", "path") == {"rmcli.cli.config_command", "rmcli.cli.help"}


def complete(*words: str) -> list[str]:
    """What bash completion offers after ``words`` (the last one being typed)."""
    env = {
        **os.environ,
        "_RMCLI_COMPLETE": "complete_bash",
        "COMP_WORDS": " ".join(words),
        "COMP_CWORD": str(len(words) - 1),
    }
    done = subprocess.run([sys.executable, "-m", "rmcli"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_offers_commands_and_their_options():
    from rmcli.cli import COMMANDS

    assert complete("rmcli", "re") == ["remove"]
    assert complete("rmcli", "") == list(COMMANDS)
    assert complete("rmcli", "remove", "--out") == ["--output"]
    assert complete("rmcli", "config", "un") == ["unset"]


def test_the_command_table_lists_exactly_what_each_module_registers():
    import importlib

    import typer

    from rmcli.cli import COMMANDS, app

    modules = {entry.module for entry in COMMANDS.values()}
    for module in modules:
        sub = typer.Typer()
        importlib.import_module(module).register(sub)
        built = set(typer.main.get_group(sub).commands)
        listed = {name for name, entry in COMMANDS.items() if entry.module == module}
        assert built == listed, module
    root = typer.main.get_command(app)
    for name, entry in COMMANDS.items():  # a command's line in rmcli --help is the table's
        command = root.get_command(None, name)
        assert command.name == name and command.get_short_help_str(200) == entry.short_help
