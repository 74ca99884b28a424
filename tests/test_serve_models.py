"""Several models behind one ``rmcli serve``: the memory budget by bytes, and fair slots by cost.

Loopback servers in subprocesses; tiny generated ONNX graphs stand in for models whose memory
(a large initializer the graph really reads) or speed matters.
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import jpeg, start_server, wait_for

pytest.importorskip("fastapi")
MIB = 1 << 20


def graph(path, size: int = 320, weights_mib: int = 0) -> None:
    """A stand-in network, input [1, 3, size, size]: the channels' mean, plus an element of
    a ``weights_mib`` initializer chosen by the input (so ONNX Runtime keeps it loaded)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros(max(1, weights_mib * MIB // 4), np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
        helper.make_node("ReduceMin", ["x"], ["z"], keepdims=0),
        helper.make_node("Mul", ["z", "zero"], ["z0"]),
        helper.make_node("Cast", ["z0"], ["i"], to=TensorProto.INT64),
        helper.make_node("Gather", ["w", "i"], ["g"]),
        helper.make_node("Add", ["m", "g"], ["y"]),
    ]
    onnx_graph = helper.make_graph(
        nodes,
        "mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, size, size])],
        initializer=[
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def register(folder, **models: tuple[int, int]) -> None:
    """Write ``folder/config.toml`` with custom u2net-family models NAME=(size, weights MiB)."""
    tables = []
    for name, (size, weights_mib) in models.items():
        path = folder / f"{name}.onnx"
        graph(path, size, weights_mib)
        tables.append(
            f'[models.{name}]\nfamily = "u2net"\npath = "{path}"\ninput_size = [{size}, {size}]\n'
        )
    (folder / "config.toml").write_text("\n".join(tables))


def post(server, model: str, image: bytes):
    with server.client() as client:
        return client.post("/api/remove", files={"file": ("car.jpg", image)}, data={"model": model})


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory):
    """Two models of about 64 MiB each (only one fits in the 160 MiB budget), and one of
    200 MiB that cannot fit; all warmed up (measured) at start."""
    folder = tmp_path_factory.mktemp("budget")
    register(folder, **{"fat-a": (320, 64), "fat-b": (320, 64), "fat-c": (320, 200)})
    args = ["--model", "fat-a", "--models", "fat-a,fat-b,fat-c"]
    server = start_server(folder, *args, "--memory-budget", str(160 * MIB))
    # ready once the default model is warm; the others are warmed up (measured) right after
    wait_for(lambda: "model fat-c needs about" in server.log_text(), what="fat-c measured")
    yield server
    assert server.stop() == 0, server.log_text()


def evictions(server) -> dict[str, float]:
    names = ("fat-a", "fat-b")
    return {name: server.metric("rmcli_serve_model_evictions", model=name) for name in names}


def test_budget_and_where_it_came_from_are_shown(budgeted):
    with budgeted.client() as client:
        ready = client.get("/readyz").json()
    assert ready["memory_budget"]["bytes"] == 160 * MIB
    assert "memory-budget" in ready["memory_budget"]["source"]
    assert "memory budget 160 MiB" in budgeted.log_text()  # the start-up line
    assert budgeted.metric("rmcli_serve_memory_budget_bytes") == 160 * MIB


def test_sessions_are_admitted_and_evicted_by_bytes(budgeted):
    image = jpeg(320, 240)
    assert post(budgeted, "fat-a", image).status_code == 200
    before = evictions(budgeted)
    assert post(budgeted, "fat-b", image).status_code == 200  # fat-a goes to make room
    assert evictions(budgeted) == {"fat-a": before["fat-a"] + 1, "fat-b": before["fat-b"]}
    held = budgeted.metric("rmcli_serve_model_memory_bytes", model="fat-b")
    assert 64 * MIB <= held <= 160 * MIB  # measured: its 64 MiB of weights, and the rest
    assert budgeted.metric("rmcli_serve_model_memory_bytes", model="fat-a") == 0
    assert post(budgeted, "fat-b", image).status_code == 200  # loaded: nothing evicted
    assert evictions(budgeted) == {"fat-a": before["fat-a"] + 1, "fat-b": before["fat-b"]}
    assert post(budgeted, "fat-a", image).status_code == 200
    assert evictions(budgeted) == {"fat-a": before["fat-a"] + 1, "fat-b": before["fat-b"] + 1}
    with budgeted.client() as client:  # what the web page lists
        loaded = client.get("/v1/models").json()["loaded"]
    assert list(loaded) == ["fat-a"] and loaded["fat-a"] >= 64 * MIB


def test_a_model_that_cannot_fit_gets_503_with_the_reason(budgeted):
    answer = post(budgeted, "fat-c", jpeg(320, 240))
    assert answer.status_code == 503, answer.text
    reason = answer.json()["error"]
    assert re.fullmatch(
        r"model fat-c needs about [\d,]+ MiB \(measured: session [\d,]+ MiB \+ one inference "
        r"[\d,]+ MiB\), more than the memory budget of 160 MiB \(serve_memory_budget, flag "
        r"--memory-budget\)",
        reason,
    ), reason
    assert budgeted.metric("rmcli_serve_rejected_total", reason="memory") == 1
    assert post(budgeted, "fat-a", jpeg(320, 240)).status_code == 200  # the others still run


def test_light_requests_go_ahead_of_a_queue_of_heavy_ones(u2netp_path, tmp_path):
    """One slot; 8 heavy u2netp requests queued, then 4 light ones at once: the light ones are
    all served as soon as the running request ends (by cost), not one per heavy request
    (by turns), and none is refused for the heavy work queued ahead."""
    register(tmp_path, tiny=(64, 0))
    server = start_server(tmp_path, "--slots", "1", "--models", "u2netp,tiny", "--deadline", "60")
    heavy, light = jpeg(2400, 1800), jpeg(64, 48)
    done: list[tuple[str, float]] = []
    lock = threading.Lock()

    def request(model: str, image: bytes) -> int:
        answer = post(server, model, image)
        with lock:
            done.append((model, time.monotonic()))
        return answer.status_code

    try:
        assert request("u2netp", heavy) == 200  # measures each model's seconds per request
        assert request("tiny", light) == 200
        with ThreadPoolExecutor(12) as pool:
            heavies = [pool.submit(request, "u2netp", heavy) for _ in range(8)]
            wait_for(lambda: server.metric("rmcli_serve_queue_depth") >= 6, what="a queue")
            lights = [pool.submit(request, "tiny", light) for _ in range(4)]
            assert [f.result() for f in lights] == [200] * 4
            light_end = max(t for m, t in done[2:] if m == "tiny")
            assert server.metric("rmcli_serve_model_queue_depth", model="u2netp") > 0
            assert [f.result() for f in heavies] == [200] * 8
        heavy_before = sum(1 for m, t in done[2:] if m == "u2netp" and t < light_end)
        assert heavy_before <= 1, done  # only the one running when the light ones came
    finally:
        assert server.stop() == 0, server.log_text()


@pytest.mark.heavy
def test_the_real_heavy_model_over_the_budget_gets_503_while_u2netp_is_served(
    u2netp_path, tmp_path
):
    """The fp32 ISNet (176 MB of weights, about 1 GB with one inference) in a 600 MiB budget."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from heavy_model import HeavyModelUnavailable, heavy_models

    try:
        isnet = heavy_models().fp32
    except HeavyModelUnavailable as exc:
        pytest.skip(f"the heavy ISNet cannot be fetched here: {exc}")
    (tmp_path / "config.toml").write_text(
        f'[models.isnet-heavy]\nfamily = "isnet"\npath = "{isnet}"\n'
    )
    # u2netp needs about 330 MiB, the ISNet about 1 GB (session and one inference, measured)
    args = ["--models", "u2netp,isnet-heavy", "--memory-budget", str(600 * MIB)]
    server = start_server(tmp_path, *args)
    try:
        measured = "isnet-heavy needs about"
        try:
            wait_for(lambda: measured in server.log_text(), timeout=300, what="ISNet measured")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the server's log:\n{server.log_text()}") from None
        answer = post(server, "isnet-heavy", jpeg(640, 480))
        assert answer.status_code == 503, answer.text
        reason = answer.json()["error"]
        assert reason.startswith("model isnet-heavy needs about") and "(measured: session" in reason
        assert "memory budget of 600 MiB" in reason
        assert post(server, "u2netp", jpeg(640, 480)).status_code == 200
        assert server.metric("rmcli_serve_model_memory_bytes", model="isnet-heavy") == 0
    finally:
        assert server.stop() == 0, server.log_text()
