"""rmcli tune: successive halving over cpu-pinned layouts, winner saved to the config file."""

from __future__ import annotations

import os
import tomllib

from conftest import EXAMPLES, rmcli

from rmcli.tools.tune import Candidate, candidates, successive_halving, thread_counts


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


def test_the_budget_stops_the_search_but_every_candidate_is_timed():
    board = halve([0.5, 0.1, 0.3, 0.9], budget=0.0)
    assert board[0].values["speed"] == 0.1
    assert all(len(c.times) == 1 and c.rounds == 1 for c in board)
    board = halve([0.5, 0.1, 0.3, 0.9], budget=5.0)  # round 1 costs 3.6, round 2 would overrun
    assert [c.rounds for c in board] == [1, 1, 1, 1]


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
    lone = [c for c in space if c["intra_threads"] == 1 and c["execution_mode"] == "sequential"]
    assert len(lone) == 1  # no pool, so spinning on or off is the same layout
    assert all(c["execution_mode"] == "sequential" for c in candidates([3], cores=1))


def test_tune_save_writes_the_winner_and_remove_uses_it(u2netp_path, tmp_path):
    image = EXAMPLES / "car-1.jpg"
    config = os.environ["RMCLI_CONFIG"]
    before = rmcli("config", "list", "--sources").stdout.decode()
    assert "intra_threads = (unset) (default)" in before
    done = rmcli("tune", "--budget", "1", "--save", str(image))
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "saved to" in out and " 1 " in out.splitlines()[2]  # leaderboard rank 1
    with open(config, "rb") as f:
        saved = tomllib.load(f)
    assert saved["backend"] == "cpu-pinned"
    assert saved["intra_threads"] >= 1
    assert saved["execution_mode"] in {"sequential", "parallel"}
    after = rmcli("config", "list", "--sources").stdout.decode()
    lines = {line.split(" = ")[0]: line for line in after.splitlines()}
    for key in ("backend", "intra_threads", "execution_mode", "allow_spinning", "cpu_binding"):
        assert lines[key].endswith(f"(file {config})"), lines[key]
    assert f"intra_threads = {saved['intra_threads']} (file {config})" in after

    done = rmcli("remove", "-v", str(image), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()
    err = done.stderr.decode()
    assert f"intra_threads = {saved['intra_threads']!r} (file {config})" in err
    assert f"\n  intra_threads = {saved['intra_threads']}\n" in err  # the layout uses it
