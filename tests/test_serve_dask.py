"""rmcli serve --executor dask: a real front end (uvicorn subprocess) and a real Dask cluster
(scheduler and worker processes on loopback), real u2netp."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from conftest import CAR, alpha_of, rmcli
from PIL import Image
from serving import car_bytes, post_at_once, start_server, wait_for

distributed = pytest.importorskip("distributed")
from worker_sessions import CountSessions, session_threads  # noqa: E402 (needs distributed)

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
