"""rmcli tune: successive halving over cpu-pinned layouts, winner saved to the config file."""

from __future__ import annotations

import json
import os
import random
import time
import tomllib

import pytest
from helpers import EXAMPLES, rmcli
from test_bench import write_tiny_model

from rmcli.config.settings import resolve
from rmcli.cpus import usable_cpu_count
from rmcli.errors import ConfigError
from rmcli.tools.tune import (
    MIN_PAIRS,
    Candidate,
    by_distance,
    candidates,
    confirm,
    is_default,
    successive_halving,
    t95,
    thread_counts,
)


class FakeClock:
    """Time that advances only by what the measured calls report."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def halve(speeds: list[float], budget: float) -> list[Candidate]:
    clock = FakeClock()
    pool = [Candidate({"intra_threads": i + 1, "speed": s}) for i, s in enumerate(speeds)]

    def time_one(candidate: Candidate, i: int) -> float:
        clock.now += candidate.values["speed"]
        return candidate.values["speed"]

    return successive_halving(pool, time_one, budget, clock)


def test_losers_are_dropped_early_and_the_fastest_wins():
    board = halve([0.5, 0.1, 0.3, 0.9, 0.2, 0.4, 0.7, 0.6], budget=1000)
    assert [c.values["speed"] for c in board] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9]
    assert [c.rounds for c in board] == [4, 3, 2, 2, 1, 1, 1, 1]
    assert [len(c.times) for c in board] == [2 + 4 + 8 + 16, 2 + 4 + 8, 6, 6, 2, 2, 2, 2]


def test_the_budget_stops_the_search_before_it_overruns():
    board = halve([0.5, 0.1, 0.3, 0.9], budget=0.0)
    assert board[0].values["speed"] == 0.5  # only the first (the default layout) is timed
    assert [len(c.times) for c in board] == [1, 0, 0, 0]
    clock_total = sum(sum(c.times) for c in halve([0.5, 0.1, 0.3, 0.9], budget=1.0))
    assert clock_total <= 1.0  # 0.5 + 0.1; a third image (0.5 s as far as it knows) would not fit
    board = halve([0.5, 0.1, 0.3, 0.9], budget=5.0)  # round 1 costs 3.6, round 2 would overrun
    assert [c.rounds for c in board] == [1, 1, 1, 1]


def confirm_with(means: list[float], jitter: float, budget: float):
    """``confirm`` on fake layouts whose times are ``mean * (1 +- jitter)``, seeded."""
    rng = random.Random(3)
    clock = FakeClock()
    layouts = candidates([0, 1], cores=2)
    pool = [Candidate({**layouts[i], "mean": m}, times=[m]) for i, m in enumerate(means)]

    def time_one(candidate: Candidate, i: int) -> float:
        took = candidate.values["mean"] * (1 + rng.uniform(-jitter, jitter))
        clock.now += took
        return took

    return confirm(pool, pool[-1], time_one, budget, clock), clock.now


def test_confirmation_repeats_until_the_leader_is_outside_the_noise():
    verdict, spent = confirm_with([1.0, 1.3, 1.5], jitter=0.05, budget=100)
    assert verdict.confirmed and verdict.winner.values["mean"] == 1.0
    assert MIN_PAIRS <= verdict.pairs < 20 and spent < 100  # stops once it is clear
    assert t95(2) > t95(9) > t95(200) > 1.96  # few pairs: a wide interval
    for ratio, noise in verdict.ratios.values():
        assert ratio / noise > 1


def test_layouts_within_the_noise_keep_the_default_and_the_budget():
    verdict, spent = confirm_with([1.0, 1.01, 1.02], jitter=0.3, budget=40)
    assert not verdict.confirmed
    assert verdict.winner.values["mean"] == 1.02  # the default passed in, not the leader
    assert "could not tell" in verdict.reason
    assert spent <= 40


def test_a_tuned_layout_sits_between_environment_and_file_for_its_model_only(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        "intra_threads = 1\nallow_spinning = false\n\n[layout.u2netp]\nintra_threads = 2\n"
    )
    tuned = f"tuned [layout.u2netp] {path}"
    settings = resolve(path=path, env={})
    assert (settings["intra_threads"], settings.source("intra_threads")) == (2, tuned)
    assert settings.source("allow_spinning") == f"file {path}"  # not in the layout
    env = resolve(path=path, env={"RMCLI_INTRA_THREADS": "3"})
    assert env.source("intra_threads") == "env RMCLI_INTRA_THREADS"
    flag = resolve({"intra_threads": 4}, path=path, env={})
    assert flag.source("intra_threads") == "flag --intra-threads"
    other = resolve({"model": "u2net"}, path=path, env={})
    assert (other["intra_threads"], other.source("intra_threads")) == (1, f"file {path}")


def test_search_space_covers_threads_mode_spinning_and_binding():
    assert thread_counts(1) == [1] and thread_counts(6) == [1, 2, 4, 6]
    space = candidates([0, 1], cores=2)
    assert len(space) == len({tuple(sorted(c.items())) for c in space}) == 11
    assert {c["cpu_binding"] for c in space if c["intra_threads"] == 1} == {""}
    assert {c["cpu_binding"] for c in space if c["intra_threads"] == 2} == {"", "0-1"}
    assert {(c["execution_mode"], c["inter_threads"]) for c in space} == {
        ("sequential", None),
        ("parallel", 2),
    }
    assert {c["allow_spinning"] for c in space} == {True, False}
    ordered = by_distance(space, cores=2)  # the order sessions are built in, budget permitting
    assert is_default(ordered[0], cores=2) and not any(is_default(c, 2) for c in ordered[1:])
    changes = [{k for k in c if c[k] != ordered[0][k]} for c in ordered[:5]]
    assert changes[0] == set() and {frozenset(c) for c in changes[1:]} == {
        frozenset({"allow_spinning"}),
        frozenset({"intra_threads", "allow_spinning"}),  # one thread: nothing to spin
        frozenset({"cpu_binding"}),
        frozenset({"execution_mode", "inter_threads"}),
    }
    lone = [c for c in space if c["intra_threads"] == 1 and c["execution_mode"] == "sequential"]
    assert len(lone) == 1  # no pool, so spinning on or off is the same layout
    assert all(c["execution_mode"] == "sequential" for c in candidates([3], cores=1))


def test_tune_save_keeps_the_layout_for_that_model_only(tmp_path):
    model = write_tiny_model(tmp_path / "tiny.onnx")
    other = write_tiny_model(tmp_path / "other.onnx")
    config = os.environ["RMCLI_CONFIG"]
    image = str(EXAMPLES / "car-1.jpg")
    custom = ["--model-path", str(model), "--model-family", "u2net"]
    done = rmcli("tune", image, *custom, "--budget", "20", "--save")
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    name = f"custom:{model}"
    assert f"saved as [layout.{name}] in {config}" in out
    with open(config, "rb") as f:
        saved = tomllib.load(f)["layout"][name]
    if "no clear winner" in out:  # a layout is only kept when it beat the others clearly
        assert saved["intra_threads"] == usable_cpu_count() and saved["allow_spinning"] is True

    tuned = f"(tuned [layout.{name}] {config})"
    done = rmcli("remove", "-v", image, *custom, "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    assert f"intra_threads = {saved['intra_threads']} {tuned}" in err
    assert f"execution_mode = {json.dumps(saved['execution_mode'])} {tuned}" in err
    listed = rmcli("config", "list", "--sources").stdout.decode()
    assert "tuned" not in listed  # the default model has no layout saved
    mine = rmcli("config", "list", "--sources", env={"RMCLI_MODEL_PATH": str(model)})
    assert f"intra_threads = {saved['intra_threads']} {tuned}" in mine.stdout.decode()

    done = rmcli(
        "remove",
        "-v",
        image,
        "--model-path",
        str(other),
        "--model-family",
        "u2net",
        "-o",
        str(tmp_path / "out2"),
    )
    assert done.returncode == 0 and "tuned" not in done.stderr.decode()


def test_a_small_budget_is_respected(u2netp_path):
    began = time.monotonic()
    done = rmcli("tune", str(EXAMPLES / "car-1.jpg"), "--budget", "8")
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr.decode()
    assert took < 8 + 12  # the interpreter's start is outside the budget: a generous margin
    assert "model u2netp" in done.stdout.decode()


def test_a_layout_table_with_another_key_is_one_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[layout.u2netp]\nmodel_path = 'x.onnx'\n")
    with pytest.raises(ConfigError, match=r"\[layout.u2netp\] holds 'model_path'; a layout holds"):
        resolve(path=path, env={})


def test_a_budget_too_small_for_one_layout_is_one_line_on_time(u2netp_path):
    began = time.monotonic()
    done = rmcli("tune", str(EXAMPLES / "car-1.jpg"), "--budget", "0.2")  # under any start-up
    took = time.monotonic() - began
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and err[-1].startswith("rmcli: error: --budget 0.2 s ran out")
    assert took < 0.2 + 12  # the worker is stopped at the deadline, not left to finish
