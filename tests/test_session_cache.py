"""The one session cache every front end uses: one build under concurrent first use, bounds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rmcli.engine.session import SessionCache


def test_simultaneous_first_requests_build_one_session():
    built: list[str] = []

    def slow_build():  # stands in for ONNX Runtime's session build
        built.append("u2netp")
        time.sleep(0.2)
        return "session of u2netp"

    cache = SessionCache()
    barrier = threading.Barrier(8)

    def first(_):
        barrier.wait()
        return cache.get(("u2netp",), slow_build)

    with ThreadPoolExecutor(8) as threads:
        assert set(threads.map(first, range(8))) == {"session of u2netp"}
    assert built == ["u2netp"] and cache.builds == 1


def test_other_keys_build_while_one_is_building():
    release = threading.Event()
    cache = SessionCache()

    def stuck():
        release.wait(5)
        return "heavy"

    with ThreadPoolExecutor(1) as thread:
        heavy = thread.submit(cache.get, ("heavy",), stuck)
        started = time.monotonic()
        assert cache.get(("light",), lambda: "light") == "light"
        assert time.monotonic() - started < 1.0  # not behind the heavy build
        release.set()
        assert heavy.result() == "heavy"


def test_a_failed_build_is_retried_by_the_next_request():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("weights not there yet")
        return "session"

    cache = SessionCache()
    with pytest.raises(RuntimeError):
        cache.get(("m",), flaky)
    assert cache.get(("m",), flaky) == "session"


def test_bounded_sessions_go_least_recently_used_first_and_when_idle_and_listeners_hear():
    now = [0.0]
    cache = SessionCache(clock=lambda: now[0])
    cache.bound(max_sessions=2, ttl=60)
    gone: list[str] = []
    unsubscribe = cache.on_evict(gone.append)
    for name in ("a", "b", "a", "c"):  # a is used again: b is the least recently used
        cache.get((name,), lambda name=name: f"s-{name}")
    assert len(cache) == 2 and cache.builds == 3 and gone == ["b"]
    cache.get(("a",), lambda: "rebuilt")
    assert cache.builds == 3  # a was kept
    now[0] = 59.0
    assert cache.evict_idle() == 0
    now[0] = 61.0
    assert cache.evict_idle() == 2 and len(cache) == 0
    assert sorted(gone) == ["a", "b", "c"]
    unsubscribe()
    cache.get(("d",), lambda: "s-d")
    now[0] = 200.0
    cache.evict_idle()
    assert "d" not in gone


def test_unbounded_by_default_as_the_cli_and_library_use_it():
    cache = SessionCache()
    for n in range(20):
        cache.get((f"m{n}",), lambda n=n: n)
    assert len(cache) == 20 and cache.evict_idle() == 0
