"""Layered settings: flags > environment > config file > defaults, ``rmcli config``, safe writes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import EXAMPLES, ROOT
from helpers import rmcli_here as rmcli

from rmcli.atomic import temporary_pattern
from rmcli.config.settings import SETTINGS, Layer, Setting, flag_help, resolve
from rmcli.cpus import allowed_cpus
from rmcli.errors import ConfigError
from rmcli.tools import config_doc

LAYERS = ("flag", "env", "file", "default")
SOURCE = {"flag": "flag --intra-threads", "env": "env RMCLI_INTRA_THREADS"}


def config_file() -> Path:
    return Path(os.environ["RMCLI_CONFIG"])


def fails_with(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Assert exit 2 with one error line (no traceback) containing every fragment."""
    err = done.stderr.decode() if isinstance(done.stderr, bytes) else done.stderr
    assert done.returncode == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def ok(*args: str, env: dict | None = None) -> str:
    done = rmcli(*args, env=env)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


# --- precedence and sources -------------------------------------------------------------------


@pytest.mark.parametrize("high,low", list(itertools.combinations(LAYERS, 2)))
def test_each_layer_beats_every_lower_one(high, low, tmp_path):
    given = {high: 2, low: 1} if low != "default" else {high: 2}
    path = tmp_path / "config.toml"
    if "file" in given:
        path.write_text(f"intra_threads = {given['file']}\n")
    flags = {"intra_threads": str(given["flag"])} if "flag" in given else {}
    env = {"RMCLI_INTRA_THREADS": str(given["env"])} if "env" in given else {}
    settings = resolve(flags, env=env, path=path)
    assert settings["intra_threads"] == 2
    assert settings.source("intra_threads") == SOURCE.get(high, f"file {path}")
    assert settings.layer("intra_threads") is Layer(high) and settings.given("intra_threads")


def test_without_any_layer_every_key_is_its_default(tmp_path):
    settings = resolve(env={}, path=tmp_path / "absent.toml")
    assert set(settings) == set(SETTINGS)
    for key, setting in SETTINGS.items():
        assert settings[key] == setting.default
        assert settings.source(key) == "default"
        assert settings.layer(key) is Layer.DEFAULT and not settings.given(key)


def test_list_sources_names_each_layer():
    config_file().write_text('execution_mode = "parallel"\nintra_threads = 1\n')
    out = ok("config", "list", "--sources", "--json", env={"RMCLI_INTRA_THREADS": "2"})
    rows = json.loads(out)
    assert rows["intra_threads"] == {"value": 2, "source": "env RMCLI_INTRA_THREADS"}
    assert rows["execution_mode"] == {"value": "parallel", "source": f"file {config_file()}"}
    assert set(SETTINGS) <= set(rows)
    set_here = {"intra_threads", "execution_mode"}  # conftest sets a few RMCLI_* too
    untouched = [k for k in SETTINGS if k not in set_here and SETTINGS[k].env_override() is None]
    assert untouched and all(rows[k]["source"] == "default" for k in untouched)
    text = ok("config", "list", "--sources", env={"RMCLI_INTRA_THREADS": "2"})
    assert "intra_threads = 2 (env RMCLI_INTRA_THREADS)\n" in text
    assert f'execution_mode = "parallel" (file {config_file()})\n' in text
    assert 'backend = "cpu-pinned" (default)\n' in text
    assert "(default)" not in ok("config", "list")


def test_get_prints_the_effective_value_and_unset_falls_back():
    ok("config", "set", "execution_mode", "parallel")
    assert ok("config", "get", "execution_mode") == "parallel\n"
    assert ok("config", "get", "execution_mode", env={"RMCLI_EXECUTION_MODE": "sequential"}) == (
        "sequential\n"
    )
    ok("config", "unset", "execution_mode")
    assert ok("config", "get", "execution_mode") == SETTINGS["execution_mode"].default + "\n"
    assert ok("config", "path") == f"{config_file()}\n"


@pytest.mark.parametrize(
    "alias,key,value",
    [
        ("INTRA_OP_NUM_THREADS", "intra_threads", 2),
        ("INTER_OP_NUM_THREADS", "inter_threads", 2),
        ("CPU_BINDING", "cpu_binding", str(allowed_cpus()[0])),
    ],
)
def test_aliases_sit_between_rmcli_variables_and_the_file(alias, key, value, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f"{key} = {json.dumps(value)}\n")
    settings = resolve(env={alias: str(value)}, path=path)
    assert settings.source(key) == f"env {alias}"
    path.write_text("")
    own = SETTINGS[key].env
    settings = resolve(env={alias: "3-2", own: str(value)}, path=path)  # the alias is not read
    assert (settings[key], settings.source(key)) == (value, f"env {own}")


def test_omp_num_threads_is_not_an_alias(tmp_path):
    settings = resolve(env={"OMP_NUM_THREADS": "1"}, path=tmp_path / "none.toml")
    assert settings.source("intra_threads") == "default"


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["get", "unset", "set"])
def test_unknown_key_suggests_the_close_one(command):
    args = ["config", command, "intra_thread"] + (["2"] if command == "set" else [])
    fails_with(rmcli(*args), "unknown setting 'intra_thread'", "did you mean 'intra_threads'")
    assert not config_file().exists()


def test_unknown_key_in_the_file_names_the_file():
    config_file().write_text("execution_mod = 'parallel'\n")
    fails_with(
        rmcli("config", "list"),
        str(config_file()),
        "execution_mod",
        "did you mean 'execution_mode'",
    )
    ok("config", "unset", "execution_mod")  # the way out: it can still be removed
    assert tomllib.loads(config_file().read_text()) == {}


@pytest.mark.parametrize(
    "env,message",
    [
        ({"RMCLI_INTRA_THREADS": "four"}, "RMCLI_INTRA_THREADS='four' is not an integer"),
        ({"RMCLI_INTRA_THREADS": "0"}, "RMCLI_INTRA_THREADS='0' must be >= 1"),
        ({"INTRA_OP_NUM_THREADS": "x"}, "INTRA_OP_NUM_THREADS='x' is not an integer"),
        ({"RMCLI_EXECUTION_MODE": "fast"}, "RMCLI_EXECUTION_MODE='fast' is not one of"),
        ({"RMCLI_ALLOW_SPINNING": "maybe"}, "RMCLI_ALLOW_SPINNING='maybe' is not a boolean"),
        ({"RMCLI_PNG_COMPRESSION": "-1"}, "RMCLI_PNG_COMPRESSION='-1' is below the minimum 0"),
        ({"CPU_BINDING": "0-4096"}, "CPU_BINDING='0-4096' names CPUs"),
        ({"RMCLI_CPU_BINDING": "3-1"}, "RMCLI_CPU_BINDING='3-1' is not a CPU list"),
    ],
)
def test_bad_environment_value_names_variable_and_value(env, message):
    fails_with(rmcli("config", "list", env=env), message)


def test_bad_file_value_names_file_key_and_value():
    config_file().write_text('intra_threads = "four"\n')
    fails_with(rmcli("config", "list"), f"{config_file()}: intra_threads='four' is not an integer")


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--intra-threads=x", "--intra-threads='x' is not an integer"),
        ("--execution-mode=fast", "--execution-mode='fast' is not one of sequential, parallel"),
        ("--graph-optimization=max", "--graph-optimization='max' is not one of"),
        ("--cpu-binding=0-4096", "--cpu-binding='0-4096' names CPUs"),
    ],
)
def test_bad_flag_value_names_the_flag(flag, message, tmp_path):
    done = rmcli("remove", str(EXAMPLES / "animal-1.jpg"), "-o", str(tmp_path), flag)
    fails_with(done, message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("intra_threads", "four", "intra_threads='four' is not an integer"),
        ("intra_threads", "0", "intra_threads='0' must be >= 1 or 'auto'"),
        ("inter_threads", "0", "inter_threads='0' is below the minimum 1"),
        ("cpu_binding", "0-4096", "cpu_binding='0-4096' names CPUs"),
        ("output_format", "tiff", "output_format='tiff' is not one of png, webp, jpg, webm"),
        ("model", "u2netq", "unknown model 'u2netq' (did you mean"),
    ],
)
def test_set_refuses_a_bad_value_and_keeps_the_file(key, value, message):
    ok("config", "set", "png_compression", "5")
    before = config_file().read_bytes()
    fails_with(rmcli("config", "set", key, value), message)
    assert config_file().read_bytes() == before


def test_set_accepts_auto_and_every_allowed_cpu():
    cpus = allowed_cpus()
    ok("config", "set", "intra_threads", "auto")
    ok("config", "set", "cpu_binding", f"{cpus[0]}-{cpus[-1]}" if len(cpus) > 1 else str(cpus[0]))
    data = tomllib.loads(config_file().read_text())
    assert data["intra_threads"] == "auto"
    assert resolve()["cpu_binding"] == data["cpu_binding"]


def test_corrupt_toml_names_file_line_and_column_and_is_never_overwritten(tmp_path):
    broken = b'model = "u2netp"\nintra_threads = = 3\n'
    config_file().write_bytes(broken)
    line = fails_with(rmcli("config", "list"), str(config_file()), "line 2, column")
    assert "invalid TOML" in line
    fails_with(rmcli("config", "set", "intra_threads", "2"), str(config_file()), "line 2")
    fails_with(rmcli("config", "unset", "model"), str(config_file()), "line 2")
    done = rmcli("remove", str(EXAMPLES / "animal-1.jpg"), "-o", str(tmp_path))
    fails_with(done, str(config_file()), "line 2, column")
    assert config_file().read_bytes() == broken


def test_set_warns_when_the_environment_shadows_the_key():
    done = rmcli("config", "set", "intra_threads", "2", env={"INTRA_OP_NUM_THREADS": "1"})
    assert done.returncode == 0
    assert "INTRA_OP_NUM_THREADS=1 in the environment overrides intra_threads" in (
        done.stderr.decode()
    )
    assert tomllib.loads(config_file().read_text())["intra_threads"] == 2
    quiet = rmcli("config", "set", "intra_threads", "1")
    assert quiet.returncode == 0 and quiet.stderr == b""


# --- the file: plugin tables, crash safety, concurrency ---------------------------------------


def test_set_keeps_plugin_tables_and_plugins_read_them():
    config_file().write_text(
        "# tomli-w drops this comment\n"
        'model = "u2netp"\n\n[plugins.acme]\nlevel = 3\nmodes = ["a", "b"]\n'
    )
    ok("config", "set", "png_compression", "4")
    ok("config", "set", "plugins.other.enabled", "true")
    data = tomllib.loads(config_file().read_text())
    assert data["plugins"] == {
        "acme": {"level": 3, "modes": ["a", "b"]},
        "other": {"enabled": True},
    }
    assert (data["model"], data["png_compression"]) == ("u2netp", 4)
    assert resolve().plugin("acme") == {"level": 3, "modes": ["a", "b"]}
    assert ok("config", "get", "plugins.acme.level") == "3\n"
    listed = ok("config", "list", "--sources")
    assert f"plugins.acme.level = 3 (file {config_file()})\n" in listed
    assert json.loads(ok("config", "list", "--json"))["plugins.acme.modes"] == ["a", "b"]
    ok("config", "unset", "plugins.other.enabled")
    assert "other" not in tomllib.loads(config_file().read_text())["plugins"]


KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from rmcli.config import file as config_file

real_fsync = os.fsync

def stall(fd):  # the new content is in the temporary file, not yet renamed into place
    real_fsync(fd)
    print("written", flush=True)
    time.sleep(120)

os.fsync = stall
config_file.set_value(Path(sys.argv[1]), "intra_threads", 7)
"""


def test_writer_killed_mid_write_leaves_the_old_file_and_no_stale_lock():
    ok("config", "set", "intra_threads", "2")
    before = config_file().read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(config_file())], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "written\n"
        temporaries = list(config_file().parent.glob(temporary_pattern(config_file())))
        assert [t.read_text() for t in temporaries] == ["intra_threads = 7\n"]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert config_file().read_bytes() == before
    assert ok("config", "get", "intra_threads") == "2\n"
    ok("config", "set", "inter_threads", "3")  # the dead writer's lock is gone
    assert tomllib.loads(config_file().read_text()) == {"intra_threads": 2, "inter_threads": 3}
    assert list(config_file().parent.glob(temporary_pattern(config_file()))) == []


def test_twenty_parallel_sets_of_different_keys_all_survive():
    settings = [
        ("intra_threads", "3", 3),
        ("inter_threads", "2", 2),
        ("execution_mode", "parallel", "parallel"),
        ("allow_spinning", "false", False),
        ("graph_optimization", "basic", "basic"),
        ("png_compression", "6", 6),
        ("device_id", "1", 1),
        ("strict_device", "true", True),
    ]
    options = [(f"plugins.parallel.option{i:02d}", str(i), i) for i in range(20 - len(settings))]
    wanted = settings + options
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "rmcli", "config", "set", key, raw], stderr=subprocess.PIPE
        )
        for key, raw, _ in wanted
    ]
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read().decode()
        writer.stderr.close()
    data = tomllib.loads(config_file().read_text())
    found = {key: data[key] for key, _, _ in settings}
    found.update({f"plugins.parallel.{k}": v for k, v in data["plugins"]["parallel"].items()})
    assert found == {key: value for key, _, value in wanted}
    assert len(found) == 20


# --- one resolution path, end to end ----------------------------------------------------------


def test_config_set_is_used_by_remove(u2netp_path, tmp_path):
    ok("config", "set", "intra_threads", "1")
    done = rmcli("remove", str(EXAMPLES / "animal-1.jpg"), "-o", str(tmp_path), "-v")
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert f"intra_threads = 1 (file {config_file()})" in err
    assert "backend cpu-pinned, thread layout:\n" in err
    assert "\n  intra_threads = 1\n" in err  # the layout, not only the setting
    assert (tmp_path / "animal-1.png").is_file()

    from rmcli import Remover

    session = Remover().session  # the real ONNX Runtime session, built from the same settings
    assert session.plan.options.intra_op_num_threads == 1
    assert session.session.get_session_options().intra_op_num_threads == 1


def test_flag_beats_environment_beats_file_in_remove(u2netp_path, tmp_path):
    ok("config", "set", "intra_threads", "2")
    ok("config", "set", "execution_mode", "parallel")
    env = {"RMCLI_INTRA_THREADS": "2", "RMCLI_EXECUTION_MODE": "sequential"}
    photo = str(EXAMPLES / "animal-1.jpg")
    flags = ["--intra-threads=1", "--no-allow-spinning", "--graph-optimization", "basic"]
    done = rmcli("remove", photo, "-o", str(tmp_path), "-v", *flags, env=env)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "intra_threads = 1 (flag --intra-threads)" in err
    assert "allow_spinning = false (flag --no-allow-spinning)" in err
    assert 'graph_optimization = "basic" (flag --graph-optimization)' in err
    assert "\n  spinning = False\n" in err  # the layout follows the flag
    assert 'execution_mode = "sequential" (env RMCLI_EXECUTION_MODE)' in err
    assert (
        f"models_dir = {json.dumps(os.environ['RMCLI_MODELS_DIR'])} (env RMCLI_MODELS_DIR)" in err
    )


def test_config_commands_do_not_import_onnxruntime():
    code = (
        "import sys\n"
        "from rmcli.cli import main\n"
        "for args in (['config', 'list', '--sources'], ['config', 'set', 'model', 'u2netp']):\n"
        "    sys.argv = ['rmcli', *args]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'onnxruntime', 'numpy'})\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_resolve_rejects_unknown_flag_keys():
    with pytest.raises(ConfigError, match="did you mean 'intra_threads'"):
        resolve({"intra_thread": 1})


# --- the table drives the docs and the flags --------------------------------------------------


def test_configuration_doc_is_generated_from_the_table(monkeypatch):
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == config_doc.updated(text), (
        "docs/configuration.md is out of date: "
        "run python -m rmcli.tools.config_doc docs/configuration.md"
    )
    for key, setting in SETTINGS.items():
        assert f"| `{key}` |" in text and f"`{setting.env}`" in text
    assert "tomli-w does not keep comments" in text
    row = Setting("example_key", str, "", "An example.", "string")
    monkeypatch.setitem(SETTINGS, "example_key", row)
    assert config_doc.updated(text) != text  # a new row makes the check above fail


def test_remove_flags_are_the_top_layer_with_help_from_the_table():
    import typer

    from rmcli.cli import remove

    app = typer.Typer()
    remove.register(app)
    helps = {p.name: p.help for p in typer.main.get_command(app).params}
    flags = config_doc.remove_flags()
    session_keys = [key for key, setting in SETTINGS.items() if setting.session]
    for key in ("intra_threads", "inter_threads", "cpu_binding", "execution_mode"):
        assert key in session_keys and helps[key] == flag_help(key)
        assert flags[key] == "--" + key.replace("_", "-")
    assert flags["allow_spinning"] == "--allow-spinning/--no-allow-spinning"
    assert SETTINGS["execution_mode"].help in helps["execution_mode"]
    assert "RMCLI_INTRA_THREADS, INTRA_OP_NUM_THREADS" in helps["intra_threads"]


def test_a_config_file_that_is_not_utf8_is_one_clear_error():
    config_file().write_bytes(b"# caf\xe9\nmodel = 'u2netp'\n")
    done = rmcli("config", "list")
    err = done.stderr.decode().strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1
    assert "is not UTF-8 text (byte 0xe9 at offset 5)" in err


def test_a_config_path_that_is_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "rmcli", "config", "list"], capture_output=True, timeout=30,
        env={**os.environ, "RMCLI_CONFIG": str(fifo)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "the config file is not a regular file" in done.stderr.decode()


# --- layers -----------------------------------------------------------------------------------


def test_a_program_and_rmcli_itself_are_layers_of_their_own(tmp_path):
    from rmcli import Remover

    settings = resolve(env={}, path=tmp_path / "absent.toml")
    chosen = settings.with_values("flag-like text", intra_threads=2)  # the text is not the layer
    assert chosen.layer("intra_threads") is Layer.API and chosen.given("intra_threads")
    derived = settings.derived("serve: one thread per slot", intra_threads=1)
    assert derived.layer("intra_threads") is Layer.DERIVED and not derived.given("intra_threads")
    assert derived.source("intra_threads") == "serve: one thread per slot"
    remover = Remover(model="u2netp", intra_threads=3)
    assert remover.settings.layer("intra_threads") is Layer.API
    assert remover.settings.source("intra_threads") == "Remover(intra_threads=...)"


def test_the_settings_choice_lists_match_the_model_code():
    from rmcli.config.settings import CLOTH_CATEGORIES, MODEL_FAMILIES
    from rmcli.engine import families

    assert MODEL_FAMILIES == tuple(families.FAMILIES)
    assert CLOTH_CATEGORIES == tuple(families.CLOTH_CATEGORIES)
    assert SETTINGS["model_family"].choices == MODEL_FAMILIES


def test_config_set_says_what_it_wrote_and_warns_about_too_many_threads():
    from rmcli import usable_cpu_count

    many = usable_cpu_count() + 6
    done = rmcli("config", "set", "intra_threads", str(many))
    assert done.returncode == 0
    assert done.stdout.decode().startswith(f"intra_threads = {many} (file ")
    assert f"intra_threads={many} is more than the {usable_cpu_count()} usable core" in (
        done.stderr.decode()
    )
