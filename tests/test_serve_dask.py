"""rmcli serve --executor dask: a real front end (uvicorn subprocess) and a real Dask cluster
(scheduler and worker processes on loopback), real u2netp; with the heavy tier's ISNet, each
worker's memory budget, routing to warm workers and failover when a worker dies."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import CAR, ROOT, alpha_of, rmcli
from PIL import Image
from serving import car_bytes, post_at_once, start_server, wait_for

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402 (installed with distributed)
from worker_sessions import (  # noqa: E402 (needs distributed)
    CountSessions,
    session_models,
    session_threads,
)

sys.path.insert(0, str(ROOT / "benchmarks"))
from heavy_model import FP32, cache_dir  # noqa: E402

MIB = 1 << 20
HEAVY = "isnet-heavy"

pytest.importorskip("fastapi")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def local_cluster(workers: int, threads: int):
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert reason and "\n" not in reason and "Traceback" not in reason
    return reason


def readiness(server) -> tuple[int, dict]:
    with server.client() as client:
        answer = client.get("/readyz")
    return answer.status_code, answer.json()


def test_dask_workers_answer_as_rmcli_remove_with_warm_sessions(u2netp_path, tmp_path):
    with local_cluster(1, 2) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(CountSessions())  # before the service warms the worker up
        server = start_server(
            tmp_path,
            "--executor", "dask", "--scheduler", cluster.scheduler_address,
            "--max-sessions", "1",
        )  # fmt: skip
        try:
            status, ready = readiness(server)
            assert status == 200 and ready["executor"] == "dask" and ready["slots"] == 2

            files = {"file": ("car-1.jpg", car_bytes())}
            answers = post_at_once(server, 6, "/api/remove", files)
            assert [a.status_code for a in answers] == [200] * 6, answers[0].text
            done = rmcli("remove", str(CAR), "-o", str(tmp_path / "local"))
            assert done.returncode == 0, done.stderr
            expected = alpha_of(tmp_path / "local" / "car-1.png")
            for answer in answers:
                served = Image.open(io.BytesIO(answer.content))
                assert served.size == (480, 360)
                assert np.abs(alpha_of(served) - expected).mean() <= 0.5

            truncated = CAR.read_bytes()[:3000]  # a good header: refused by the worker
            with server.client() as http:
                bad = http.post("/v1/remove", files={"file": ("cut.jpg", truncated)})
            assert one_line_error(bad, 400).startswith("cut.jpg: ")

            # one warm session on the worker (built by the warm-up, one intra-op thread per
            # worker thread); none in the front end; every stage measured per answer
            assert client.run(session_threads) == {w: [1] for w in client.nthreads()}
            assert server.metric("rmcli_serve_sessions") == 0
            assert server.metric("rmcli_serve_slots") == 2
            assert server.metric("rmcli_serve_intra_threads") == 1
            for stage in ("queue", "decode", "inference", "encode"):
                assert server.metric("rmcli_serve_stage_seconds_count", stage=stage) == 6

            # the worker keeps at most serve_max_sessions (1): switching models rebuilds
            with server.client() as http:
                for model in ("studio-white", "u2netp"):
                    answer = http.post(
                        "/api/remove", files={"file": car_bytes()}, data={"model": model}
                    )
                    assert answer.status_code == 200, answer.text
            assert client.run(session_threads) == {w: [1, 1, 1] for w in client.nthreads()}
        finally:
            assert server.stop() == 0, server.log_text()


def test_slots_follow_workers_joining_and_leaving(u2netp_path, tmp_path):
    with local_cluster(0, 1) as cluster:
        server = start_server(
            tmp_path,
            "--executor", "dask", "--scheduler", cluster.scheduler_address,
            ready=False,
        )  # fmt: skip
        try:
            wait_for(lambda: "listening on" in server.log_text(), what="the server")
            status, body = readiness(server)
            assert status == 503 and "no Dask workers" in body["error"]
            with server.client() as http:
                refused = http.post("/api/remove", files={"file": ("car.jpg", car_bytes())})
            assert "no Dask workers" in one_line_error(refused, 503)
            assert refused.headers["Retry-After"] == "1"

            cluster.scale(1)
            wait_for(lambda: readiness(server)[0] == 200, timeout=120, what="a worker")
            with server.client() as http:
                answer = http.post("/api/remove", files={"file": ("car.jpg", car_bytes())})
            assert answer.status_code == 200, answer.text
            assert server.metric("rmcli_serve_slots") == 1

            cluster.scale(0)
            wait_for(lambda: readiness(server)[0] == 503, timeout=60, what="the worker gone")
            assert server.metric("rmcli_serve_slots") == 0
            log = server.log_text()
            assert "joined (1 threads)" in log and "left" in log
        finally:
            assert server.stop() == 0, server.log_text()


def test_serve_refuses_a_batch_executor_or_an_unreachable_scheduler_in_one_line():
    for args, expected in (
        (("--executor", "nosuch"), "unknown executor 'nosuch'"),
        (("--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"), "cannot reach"),
    ):
        done = rmcli("serve", "--port", "0", *args)
        stderr = done.stderr.decode()
        assert done.returncode == 2, stderr
        assert stderr.strip().count("\n") == 0 and expected in stderr, stderr


# --- several models on two workers: each worker's memory budget, routing, failover ----------


@pytest.fixture
def heavy_config(tmp_path, monkeypatch):
    """``tmp_path/config.toml`` registering the heavy tier's fp32 ISNet as ``isnet-heavy``, for
    the server and (through ``RMCLI_CONFIG``) the worker processes a cluster starts after."""
    isnet = cache_dir() / FP32
    if not isnet.is_file():
        pytest.skip(f"no heavy ISNet in {cache_dir()} (python benchmarks/heavy_model.py)")
    config = tmp_path / "config.toml"
    config.write_text(f'[models.{HEAVY}]\nfamily = "isnet"\npath = "{isnet}"\n')
    monkeypatch.setenv("RMCLI_CONFIG", str(config))
    return config


def serve_models(tmp_path, cluster, *args: str):
    return start_server(
        tmp_path,
        "--executor", "dask", "--scheduler", cluster.scheduler_address,
        "--model", "u2netp", "--models", f"u2netp,{HEAVY}", *args,
    )  # fmt: skip


def post_model(server, model: str):
    with server.client() as http:
        files = {"file": ("car.jpg", car_bytes())}
        return http.post("/api/remove", files=files, data={"model": model}, timeout=300)


def post_models_at_once(server, models: list[str]) -> list:
    barrier = threading.Barrier(len(models))

    def send(model):
        barrier.wait()
        return post_model(server, model)

    with ThreadPoolExecutor(len(models)) as pool:
        return list(pool.map(send, models))


def assert_cut_out(answer) -> None:
    assert answer.status_code == 200, answer.text
    alpha = alpha_of(Image.open(io.BytesIO(answer.content)))
    assert alpha.shape == (360, 480) and 10 < alpha.mean() < 245  # a real cut-out


def warm_on(server, model: str) -> set[str]:
    """The workers the server's log last reported holding ``model`` warm."""
    found: dict[str, str] = {}
    for worker, held in re.findall(r"Dask worker (\S+) holds warm: (.*);", server.log_text()):
        found[worker] = held
    return {worker for worker, held in found.items() if re.search(rf"\b{model} \(", held)}


def running_on(client, prefix: str) -> str | None:
    """The worker running (or assigned) a task whose key starts with ``prefix``."""
    for worker, keys in client.processing().items():
        if any(str(key).startswith(prefix) for key in keys):
            return worker
    return None


@pytest.mark.heavy
def test_heavy_requests_go_to_the_worker_that_holds_the_model_warm(
    u2netp_path, heavy_config, tmp_path
):
    with local_cluster(2, 1) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(CountSessions())
        server = serve_models(tmp_path, cluster)
        try:
            assert_cut_out(post_model(server, HEAVY))  # cold: built on one worker
            wait_for(lambda: warm_on(server, HEAVY), what="the worker's report")
            (holder,) = warm_on(server, HEAVY)
            assert warm_on(server, "u2netp") == set(client.nthreads())  # warmed up at start

            for _ in range(2):  # both workers busy at once: each model on its warm worker
                for answer in post_models_at_once(server, [HEAVY, "u2netp"]):
                    assert_cut_out(answer)

            built = client.run(session_models)
            assert {w: models.count(HEAVY) for w, models in built.items()} == {
                w: int(w == holder) for w in client.nthreads()
            }
            assert all(models.count("u2netp") == 1 for models in built.values())
            with server.client() as http:  # /readyz shows each worker's budget and models
                budget = http.get("/readyz").json()["memory_budget"]
            assert set(budget["workers"]) == set(client.nthreads())
            assert HEAVY in budget["workers"][holder]["loaded"]
            assert all(w["bytes"] > 0 for w in budget["workers"].values())
        finally:
            assert server.stop() == 0, server.log_text()


@pytest.mark.heavy
def test_a_model_larger_than_the_worker_budget_gets_503_while_others_are_served(
    u2netp_path, heavy_config, tmp_path
):
    with local_cluster(2, 1) as cluster, distributed.Client(cluster) as client:
        client.register_plugin(CountSessions())
        server = serve_models(tmp_path, cluster, "--memory-budget", str(700 * MIB))
        try:
            for _ in range(2):  # the first asks both workers; the second neither
                reason = one_line_error(post_model(server, HEAVY), 503)
                assert f"model {HEAVY} needs about" in reason
                assert "more than the memory budget of 700 MiB (serve_memory_budget" in reason
                assert_cut_out(post_model(server, "u2netp"))
            log = server.log_text()
            assert all(f"Dask worker {w}: model {HEAVY} needs" in log for w in client.nthreads())
            assert server.metric("rmcli_serve_rejected_total", reason="memory") == 2
            built = client.run(session_models)
            assert all(models == ["u2netp"] for models in built.values())  # ISNet never built
        finally:
            assert server.stop() == 0, server.log_text()


@pytest.mark.heavy
@pytest.mark.parametrize("allowed_failures", [3, 0], ids=["rescheduled", "given-up"])
def test_a_worker_killed_mid_request_fails_over_and_the_survivor_serves(
    u2netp_path, heavy_config, tmp_path, allowed_failures
):
    """Dask runs a job again when its worker dies (200), up to the scheduler's
    allowed-failures (Dask's default 3); past them, 503 + Retry-After with the reason."""
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}),
        local_cluster(2, 1) as cluster,
        distributed.Client(cluster) as client,
    ):
        server = serve_models(tmp_path, cluster, "--deadline", "300")
        try:
            pids = client.run(os.getpid)
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(post_model, server, HEAVY)

                prefix = f"rmcli-serve-{HEAVY}-"  # the service's task keys
                wait_for(lambda: running_on(client, prefix), timeout=120, what="the job running")
                victim = running_on(client, prefix)
                assert victim, "the job ended before its worker could be killed"

                async def kill(pid):  # async: client.run can fire it without an answer
                    os.kill(pid, signal.SIGKILL)

                client.run(kill, pids[victim], workers=[victim], wait=False)
                answer = pending.result(timeout=360)
            assert pids[victim] not in client.run(os.getpid).values()  # it really died
            if allowed_failures:  # Dask ran it again on the other worker
                assert_cut_out(answer)
            else:
                reason = one_line_error(answer, 503)
                assert reason.startswith("car.jpg: the Dask worker running it died"), reason
                assert answer.headers["Retry-After"] == "1"
            for model in (HEAVY, "u2netp"):
                assert_cut_out(post_model(server, model))
        finally:
            assert server.stop() == 0, server.log_text()
