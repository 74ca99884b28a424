"""rmcli serve against hostile and careless clients: time limits, connection caps, labels, logs.

Real servers (uvicorn in a subprocess) on 127.0.0.1 with small limits set for the test, so each
slow-client case ends within a few seconds. Model fetching runs in a network namespace with only
``lo`` (root only), so nothing can leave the machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import WEIGHTS_CACHE, rmcli
from PIL import Image
from serving import car_bytes, jpeg, start_server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def limited(u2netp_path, tmp_path_factory):
    """1 slot + 1 queue place; headers 1 s, body 3 s at 1000 bytes/s; 40 connections/address."""
    folder = tmp_path_factory.mktemp("limited")
    env = {
        "RMCLI_SERVE_SLOTS": "1",
        "RMCLI_SERVE_QUEUE": "1",
        "RMCLI_SERVE_HEADER_TIMEOUT": "1",
        "RMCLI_SERVE_BODY_TIMEOUT": "3",
        "RMCLI_SERVE_MIN_RATE": "1000",
        "RMCLI_SERVE_CLIENT_CONNECTIONS": "40",
    }
    started = start_server(folder, env=env)
    yield started
    assert started.stop() == 0, started.log_text()


def address(server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def answer_of(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_slow_uploads_hold_no_admission_place_and_are_cut(limited):
    """33 uploads trickling their bodies do not keep a normal client from its 200."""
    host, port = address(limited)
    slow = []
    for _ in range(33):
        sock = socket.create_connection((host, port))
        sock.sendall(
            b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n-"
        )
        slow.append(sock)
    try:
        wait_for(lambda: True)
        started = time.monotonic()
        with limited.client() as client:
            answer = client.post("/api/remove", files={"file": car_bytes()})
        assert answer.status_code == 200, answer.text
        answers = [answer_of(sock, 10) for sock in slow]
        assert time.monotonic() - started < 10
    finally:
        for sock in slow:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
    assert b"serve_min_rate" in answers[0]


def test_request_headers_have_a_time_limit(limited):
    host, port = address(limited)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"POST /api/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and no more
        started = time.monotonic()
        answer = answer_of(sock, 10)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"serve_header_timeout" in answer and time.monotonic() - started < 5


def test_connections_per_client_address_are_capped(limited):
    host, port = address(limited)
    with limited.client() as client:  # the connections of earlier tests are gone
        wait_for(lambda: client.get("/healthz").status_code == 200, what="a free connection")
    held = [socket.create_connection((host, port)) for _ in range(40)]
    try:
        with socket.create_connection((host, port)) as extra:
            answer = answer_of(extra, 5)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b"serve_client_connections" in answer and b"Retry-After: 1" in answer
    finally:
        for sock in held:
            sock.close()
    with limited.client() as client:  # the cap counts open connections, not past ones
        wait_for(lambda: client.get("/healthz").status_code == 200, what="the cap released")


def test_client_chosen_model_names_never_become_metric_labels(limited):
    names = ["x" * 20_000, "evil\x00name", 'quote"} 1\nrmcli_fake 9']
    with limited.client() as client:
        for name in names:
            answer = client.post("/api/remove", files={"file": car_bytes()}, data={"model": name})
            assert answer.status_code == 400, answer.text
        ok = client.post("/api/remove", files={"file": car_bytes()}, data={"model": "u2netp"})
        assert ok.status_code == 200
        text = client.get("/metrics").text
    assert "xxxxxxxxxx" not in text and "evil" not in text and "rmcli_fake" not in text
    assert "\x00" not in text and len(text) < 100_000
    assert limited.metric(
        "rmcli_serve_requests_total", endpoint="/api/remove", model="other", status="400"
    ) >= len(names)
    assert (
        limited.metric(
            "rmcli_serve_requests_total", endpoint="/api/remove", model="u2netp", status="200"
        )
        >= 1
    )


def test_client_strings_in_the_access_log_are_escaped(limited):
    forged = 'FORGED 10.0.0.1 "POST /admin" 200'
    with limited.client() as client:
        client.post("/api/remove", files={"file": car_bytes()}, data={"model": "m\n" + forged})
        client.get("/nothing%0A" + forged.replace(" ", "%20").replace('"', "%22"))
    wait_for(lambda: "nothing" in limited.log_text(), what="the access line")
    lines = limited.log_text().splitlines()
    assert not [line for line in lines if line.startswith("FORGED")], lines[-5:]
    assert any("nothing\\nFORGED" in line for line in lines), lines[-5:]


def test_output_too_large_for_webp_or_jpeg_is_a_4xx_with_the_clis_reason(limited):
    buffer = io.BytesIO()
    Image.new("RGB", (17000, 20), (90, 120, 200)).save(buffer, "PNG")
    wide = buffer.getvalue()
    with limited.client() as client:  # one keep-alive connection
        for fmt, name in (("webp", "WebP"), ("jpg", None)):
            answer = client.post(
                "/v1/remove", files={"file": ("wide.png", wide)}, data={"format": fmt}
            )
            if name is None:  # 17000 px fit JPEG
                assert answer.status_code == 200, answer.text
                continue
            assert answer.status_code == 422, answer.text
            reason = answer.json()["error"]
            assert f"17000x20 is too large for {name}" in reason and "format png" in reason
        again = client.post("/api/remove", files={"file": car_bytes()})
        assert again.status_code == 200
    assert "Traceback" not in limited.log_text()


def test_host_header_must_name_this_server(limited):
    with limited.client() as client:
        rebound = client.get("/v1/models", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400 and "serve_allowed_hosts" in rebound.json()["error"]
        upload = client.post(
            "/api/remove", files={"file": car_bytes()}, headers={"Host": "attacker.example:80"}
        )
        assert upload.status_code == 400
        for host in ("localhost", f"localhost:{address(limited)[1]}", "127.0.0.1", "[::1]:80"):
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_docs_page_loads_nothing_from_elsewhere(limited):
    with limited.client() as client:
        page = client.get("/docs")
        assert client.get("/openapi.json").status_code == 200
    assert page.status_code == 200, page.text
    assert "/api/remove" in page.text and "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "cdn" not in page.text


def test_url_fetch_switch_alone_starts_the_server(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--url-fetch", "--no-warmup", ready=False)
    try:
        with server.client() as client:
            answer = client.get("/api/remove", params={"url": "http://127.0.0.1:9/x.jpg"})
        assert answer.status_code == 403 and "loopback" in answer.json()["error"], answer.text
    finally:
        assert server.stop() == 0, server.log_text()
    done = rmcli("serve", "--port", "70000", env={"RMCLI_SERVE_URL_FETCH": "true"})
    assert "port" in done.stderr.decode() and "serve_url_allow" not in done.stderr.decode()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("::10.1.2.3", "private"),
        ("::169.254.169.254", "link-local"),
        ("::ffff:0:127.0.0.1", "loopback"),  # IPv4-translated
        ("::ffff:0:192.168.1.1", "private"),
        ("64:ff9b::10.0.0.1", "private"),  # NAT64
    ],
)
def test_ipv4_inside_ipv6_is_judged_by_the_ipv4_rules(address, kind):
    import asyncio

    from rmcli.serve.http_errors import ServeError
    from rmcli.serve.url_fetch import UrlPolicy, checked_target

    policy = UrlPolicy(1000)  # a literal address: checked, never resolved
    with pytest.raises(ServeError, match=kind) as refused:
        asyncio.run(checked_target(f"http://[{address}]/x.jpg", policy))
    assert refused.value.status == 403


class _Trickle(BaseHTTPRequestHandler):
    """An image server that answers at once, then sends its body one byte every 0.2 s."""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the fetcher gave up

    def log_message(self, *args):
        pass


def test_slow_url_is_cut_at_the_total_fetch_limit_without_an_inference_place(u2netp_path, tmp_path):
    trickle = ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=trickle.serve_forever, daemon=True).start()
    env = {
        "RMCLI_SERVE_URL_FETCH": "true",
        "RMCLI_SERVE_URL_ALLOW": "127.0.0.1/32",
        "RMCLI_SERVE_URL_TIMEOUT": "2",
        "RMCLI_SERVE_SLOTS": "1",
        "RMCLI_SERVE_QUEUE": "0",
    }
    server = start_server(tmp_path, env=env)
    url = f"http://127.0.0.1:{trickle.server_address[1]}/slow.jpg"
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            fetching = pool.submit(
                lambda: httpx.get(server.url + "/api/remove", params={"url": url}, timeout=60)
            )
            time.sleep(0.5)  # the fetch is under way: the one admission place stays free
            with server.client() as client:
                assert client.post("/api/remove", files={"file": car_bytes()}).status_code == 200
            answer = fetching.result()
            elapsed = time.monotonic() - started
        assert answer.status_code == 504, answer.text
        assert "serve_url_timeout" in answer.json()["error"] and elapsed < 10
    finally:
        trickle.shutdown()
        trickle.server_close()
        assert server.stop() == 0, server.log_text()


def test_sigterm_answers_unfinished_requests_503_with_retry_after_and_exits_0(
    u2netp_path, tmp_path
):
    server = start_server(tmp_path, "--slots", "1", "--queue", "16", "--grace", "1")
    big = jpeg(2400, 1800)

    def send(_):
        with server.client() as client:
            return client.post("/v1/remove", files={"file": ("big.jpg", big)})

    with ThreadPoolExecutor(10) as pool:
        answers = pool.map(send, range(10))
        wait_for(lambda: server.metric("rmcli_serve_admitted") == 10, what="10 requests inside")
        server.process.send_signal(15)
        answers = list(answers)
    assert server.process.wait(60) == 0
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 503} and 503 in statuses, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.headers["Retry-After"] == "1"
            assert "shutting down" in answer.json()["error"]


def test_matting_kernels_compile_at_start_without_holding_requests(u2netp_path, tmp_path):
    import importlib.util

    if importlib.util.find_spec("pymatting") is None:  # not imported here: that compiles
        pytest.skip("needs pymatting (rmcli[matting])")
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # a cold compile, as on install
    server = start_server(tmp_path, "--deadline", "5", env=env)
    try:
        with server.client() as client:
            started = time.monotonic()
            matting = client.post("/api/remove", files={"file": car_bytes()}, data={"a": "true"})
            plain = client.post("/api/remove", files={"file": car_bytes()})
            elapsed = time.monotonic() - started
        assert plain.status_code == 200
        log = server.log_text()
        assert "compiling pymatting's kernels" in log
        if "alpha matting ready" not in log.split("compiling pymatting's kernels")[1]:
            assert matting.status_code == 503, matting.text
            assert "being compiled" in matting.json()["error"]
            assert matting.headers["Retry-After"] == "1" and elapsed < 5
        else:  # compiled before the first request (a fast machine): matting just works
            assert matting.status_code == 200, matting.text
    finally:
        assert server.stop() == 0, server.log_text()


ISOLATED = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from serving import car_bytes, start_server
out = {{}}
for case, args in (("default", ()), ("allowed", ("--fetch-models",))):
    folder = Path({folder!r}) / case
    folder.mkdir()
    server = start_server(folder, "--no-warmup", *args)
    answers = []
    with server.client() as client:
        for _ in range(3):
            r = client.post("/api/remove", files={{"file": car_bytes()}}, data={{"model": "u2net"}})
            answers.append([r.status_code, r.text, r.headers.get("Retry-After")])
            if case == "allowed":
                import time
                time.sleep(1.5)
    out[case] = {{"answers": answers, "exit": server.stop(), "log": server.log_text()}}
print(json.dumps(out))
"""


def in_isolated_network(code: str) -> dict:
    """Run ``code`` (it prints JSON) in a network namespace where only ``lo`` exists."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root, unshare and ip for a network namespace with only lo")
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable],
        input=code.encode(),
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_clients_cannot_make_the_server_fetch_models_or_learn_its_paths(u2netp_path, tmp_path):
    assert not (WEIGHTS_CACHE / "u2net.onnx").exists(), "this test needs u2net not cached"
    out = in_isolated_network(ISOLATED.format(tests=str(HERE), folder=str(tmp_path)))
    default, allowed = out["default"], out["allowed"]
    for case in (default, allowed):
        assert case["exit"] == 0, case["log"]
        for _, text, _ in case["answers"]:
            assert str(WEIGHTS_CACHE) not in text and str(tmp_path) not in text, text
            assert "/root" not in text and "/home" not in text, text
    # by default: refused, never fetched
    assert [a[0] for a in default["answers"]] == [400] * 3
    assert "serve_fetch_models" in default["answers"][0][1]
    assert "fetching the weights" not in default["log"]
    # allowed: one background fetch, whatever the number of requests; 503 + Retry-After
    assert [a[0] for a in allowed["answers"]] == [503] * 3, allowed["answers"]
    assert all(a[2] for a in allowed["answers"])
    assert allowed["log"].count("fetching the weights of model u2net") == 1, allowed["log"]
    assert "could not be fetched" in allowed["answers"][-1][1]
