"""The dask executor on a real 2-worker LocalCluster (loopback): parity, sessions, worker loss."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers import DATA, EXAMPLES, alpha_of, rmcli
from PIL import Image

from rmcli import Remover

distributed = pytest.importorskip("distributed")
from worker_sessions import CountSessions, session_threads  # noqa: E402 (needs distributed)

PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes on loopback, shared by the tests of this module."""
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(CountSessions())
        yield client


def test_dask_matches_local_with_one_session_per_worker(client, u2netp_path, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for photo in PHOTOS:
        (inputs / photo.name).symlink_to(photo)
    (inputs / "broken.jpg").write_bytes(b"not a jpeg at all")
    address = client.scheduler.address

    local = rmcli("remove", str(inputs), "-o", str(tmp_path / "local"))
    dask = rmcli(
        "remove", str(inputs), "-o", str(tmp_path / "dask"), "--executor", "dask",
        "--scheduler", address,
    )  # fmt: skip

    assert dask.returncode == local.returncode == 1, dask.stderr.decode()
    for run, name in ((local, "local"), (dask, "dask")):  # written paths, in input order
        expected = [str(tmp_path / name / f"{p.stem}.png") for p in PHOTOS]
        assert run.stdout.decode().split() == expected
    errors = dask.stderr.decode().splitlines()
    assert f"{inputs / 'broken.jpg'}: not an image (or a format Pillow cannot read)" in errors
    assert errors[-1] == "13 written, 1 failed"
    for photo in PHOTOS:
        ours = alpha_of(tmp_path / "dask" / f"{photo.stem}.png")
        theirs = alpha_of(tmp_path / "local" / f"{photo.stem}.png")
        assert np.abs(ours - theirs).mean() <= 0.5, photo.name
    # exactly one session per worker, its intra-op pool sized to the worker's one thread
    assert client.run(session_threads) == {w: [1] for w in client.nthreads()}


def test_workers_read_and_write_storage_urls(client, u2netp_path, tmp_path):
    remover = Remover(dask_scheduler=client.scheduler.address)
    names = ["car-2", "plants-1"]
    urls = [f"file://{EXAMPLES}/{name}.jpg" for name in names]
    results = remover.map(urls, f"file://{tmp_path}/out", executor="dask")
    assert sorted((r.job.output, r.error) for r in results) == [
        (f"file://{tmp_path}/out/{name}.png", None) for name in names
    ]
    for name in names:
        reference = alpha_of(DATA / "rembg-u2netp" / f"{name}.alpha.png")
        assert np.abs(alpha_of(tmp_path / "out" / f"{name}.png") - reference).mean() <= 0.5


def test_lost_worker_chunks_are_retried_and_outputs_stay_whole(client, u2netp_path, tmp_path):
    pids = client.run(os.getpid)

    async def kill(pid):  # async: client.run can fire it without waiting for an answer
        os.kill(pid, signal.SIGKILL)

    remover = Remover(dask_scheduler=client.scheduler.address)
    results = []
    victim = None
    for result in remover.map(PHOTOS, tmp_path, executor="dask"):
        results.append(result)
        if victim is None:  # after the first result: kill a worker that holds a chunk
            busy = [w for w, keys in client.processing().items() if keys]
            assert busy, "the batch ended before a worker could be killed"
            victim = busy[0]
            client.run(kill, pids[victim], workers=[victim], wait=False)
    assert pids[victim] not in client.run(os.getpid).values()  # it really died
    assert sorted(r.job.label for r in results) == sorted(str(p) for p in PHOTOS)
    assert [r.error for r in results] == [None] * len(PHOTOS)
    for photo in PHOTOS:
        written = Image.open(tmp_path / f"{photo.stem}.png")
        written.load()  # a truncated file fails here
        reference = alpha_of(DATA / "rembg-u2netp" / f"{photo.stem}.alpha.png")
        assert np.abs(alpha_of(written) - reference).mean() <= 0.5, photo.name
    expected = {f"{p.stem}.png" for p in PHOTOS}
    leftovers = set(os.listdir(tmp_path)) - expected  # at most the killed writer's temp file
    assert expected <= set(os.listdir(tmp_path))
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftovers)


@pytest.fixture
def silent_server():
    """A loopback TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.5)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:  # timeout: look at stop again
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    server.close()


def test_a_dask_scheduler_that_never_answers_times_out_with_one_line_and_exit_2(
    tmp_path, silent_server
):
    pytest.importorskip("distributed")
    Image.new("RGB", (40, 30), "red").save(tmp_path / "one.png")
    address = f"tcp://127.0.0.1:{silent_server}"
    done = subprocess.run(  # bounded: a hang fails the test instead of stalling the suite
        [sys.executable, "-m", "rmcli", "remove", "one.png", "-o", "out", "--executor", "dask",
         "--scheduler", address],
        cwd=tmp_path, capture_output=True, timeout=120,
    )  # fmt: skip
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert lines == [
        f"rmcli: error: cannot reach the Dask scheduler {address!r} (flag --scheduler): "
        "no answer within 10 s"
    ]
    assert not (tmp_path / "out").exists()
