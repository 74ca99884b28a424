"""rmcli serve, run for real: uvicorn in a subprocess on a loopback ephemeral port, real u2netp."""

from __future__ import annotations

import io
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import CAR, alpha_of, rmcli
from PIL import Image
from serving import car_bytes, jpeg, post_at_once, start_server, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(u2netp_path, tmp_path_factory):
    """Defaults, with small limits to test: 1 MP, 2 MB bodies."""
    folder = tmp_path_factory.mktemp("serve")
    env = {"RMCLI_MAX_PIXELS": "1000000", "RMCLI_SERVE_MAX_BODY": "2000000"}
    started = start_server(folder, env=env)
    yield started
    assert started.stop() == 0, started.log_text()


def png_of(response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def one_line_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    reason = response.json()["error"]
    assert reason and "\n" not in reason and "Traceback" not in reason
    return reason


def test_rembg_form_gives_the_png_rmcli_remove_gives(server, tmp_path):
    # rembg's README: curl -s -F file=@input.png "http://localhost:7000/api/remove" -o out.png
    with server.client() as client:
        answer = client.post("/api/remove", files={"file": ("car-1.jpg", car_bytes())})
        with_fields = client.post(
            "/api/remove",
            files={"file": ("car-1.jpg", car_bytes())},
            data={"model": "u2netp", "a": "false", "om": "false", "ppm": "false"},
        )
    assert answer.headers["content-type"] == "image/png"
    served = png_of(answer)
    assert served.mode == "RGBA" and served.size == (480, 360)
    done = rmcli("remove", str(CAR), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    expected = alpha_of(tmp_path / "car-1.png")
    assert np.array_equal(alpha_of(served), expected)
    assert np.array_equal(alpha_of(png_of(with_fields)), expected)
    # rembg's colour is premultiplied: a fully transparent pixel is black
    pixels = np.asarray(served)
    assert not pixels[pixels[..., 3] == 0][:, :3].any()


def test_rembg_only_mask_and_background_colour(server):
    with server.client() as client:
        mask = png_of(client.post("/api/remove", files={"file": car_bytes()}, data={"om": "true"}))
        red = png_of(
            client.post("/api/remove", files={"file": car_bytes()}, params={"bgc": "255,0,0,255"})
        )
        cut = png_of(client.post("/api/remove", files={"file": car_bytes()}))
    assert mask.mode == "L"
    assert np.array_equal(np.asarray(mask), alpha_of(cut))
    assert red.mode == "RGBA" and alpha_of(red).min() == 255  # rembg's RGBA, opaque
    corner = np.asarray(red)[0, 0]
    assert corner[0] > 200 and corner[1] < 60 and corner[2] < 60


def test_v1_remove_options_formats_and_background_image(server):
    back = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(back, "PNG")
    with server.client() as client:
        post = lambda **data: client.post(  # noqa: E731
            "/v1/remove", files={"file": ("car.jpg", car_bytes())}, data=data
        )
        webp = post(format="webp")
        jpg = post(format="jpg", bgcolor="white")
        cropped = png_of(post(crop="true", margin="0"))
        mask = png_of(post(only_mask="true"))
        over_blue = client.post(
            "/v1/remove",
            files={"file": ("car.jpg", car_bytes()), "background": ("b.png", back.getvalue())},
        )
    assert webp.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(webp.content)).mode == "RGBA"
    assert jpg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpg.content)).format == "JPEG"
    assert cropped.width < 480 and cropped.height < 360
    assert mask.mode == "L" and mask.size == (480, 360)
    blue = png_of(over_blue)
    assert blue.mode == "RGB"
    assert tuple(np.asarray(blue)[0, 0]) == (0, 0, 255)


def test_bad_requests_are_4xx_with_one_line_never_500(server):
    truncated = car_bytes()[:3000]
    huge_header = io.BytesIO()
    Image.new("L", (1200, 1000)).save(huge_header, "PNG")
    with server.client() as client:
        post = lambda body, **data: client.post(  # noqa: E731
            "/v1/remove", files={"file": ("x.jpg", body)}, data=data
        )
        assert "not an image" in one_line_error(post(b"hello, not an image"), 400)
        assert "empty" in one_line_error(post(b""), 400)
        assert "x.jpg" in one_line_error(post(truncated), 400)
        assert "bgcolor" in one_line_error(post(car_bytes(), bgcolor="nope"), 400)
        assert "format" in one_line_error(post(car_bytes(), format="gif"), 422)
        assert "model" in one_line_error(post(car_bytes(), model="no-such-model"), 400)
        reason = one_line_error(post(huge_header.getvalue()), 422)
        assert "1200x1000" in reason and "over the limit of 1,000,000" in reason
        missing = client.post("/api/remove", data={"model": "u2netp"})
        assert "file" in one_line_error(missing, 422)
        assert "af" in one_line_error(
            client.post("/api/remove", files={"file": car_bytes()}, data={"af": "300"}), 422
        )
        assert client.get("/healthz").status_code == 200


def test_body_over_the_limit_is_413_with_or_without_a_length(server):
    body = b"x" * 2_500_000
    with server.client() as client:
        declared = client.post("/v1/remove", files={"file": ("big.jpg", body)})
        assert "serve_max_body" in one_line_error(declared, 413)

        def chunks():  # no Content-Length: the body is counted as it arrives
            yield b'--zzz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            for _ in range(25):
                yield b"y" * 100_000

        streamed = client.post(
            "/v1/remove",
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=zzz"},
        )
        one_line_error(streamed, 413)


def test_cors_is_off_unless_origins_are_configured(server, guarded):
    asked = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    with server.client() as client:
        assert "access-control-allow-origin" not in client.get("/healthz", headers=asked).headers
        assert (
            "access-control-allow-origin" not in client.options("/v1/remove", headers=asked).headers
        )
    with guarded.client() as client:
        allowed = client.options("/v1/remove", headers=asked)
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = client.options("/v1/remove", headers={**asked, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_url_fetching_is_off_unless_enabled(server):
    with server.client() as client:
        answer = client.get("/api/remove", params={"url": "http://127.0.0.1/x.jpg"})
    reason = one_line_error(answer, 403)
    assert "--url-fetch" in reason and "RMCLI_SERVE_URL_FETCH" in reason


def test_health_readiness_and_metrics_after_requests(server):
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        assert client.get("/readyz").json()["status"] == "ready"
        png_of(client.post("/api/remove", files={"file": car_bytes()}))
        client.post("/api/remove", files={"file": b"junk"})
        answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert (
        server.metric(
            "rmcli_serve_requests_total", endpoint="/api/remove", model="u2netp", status="200"
        )
        >= 1
    )
    assert (
        server.metric(
            "rmcli_serve_requests_total", endpoint="/api/remove", model="u2netp", status="400"
        )
        >= 1
    )
    for stage in ("queue", "decode", "inference", "encode"):
        assert server.metric("rmcli_serve_stage_seconds_count", stage=stage) >= 1
    assert server.metric("rmcli_serve_sessions") == 1
    assert server.metric("rmcli_serve_slots") >= 1
    assert "rmcli_serve_queue_depth 0.0" in text
    assert "rmcli_serve_inflight_inferences" in text
    assert server.metric("process_cpu_seconds_total") > 0
    access = server.log_text()
    assert '"POST /api/remove" 200' in access and "model=u2netp" in access


def test_openapi_documents_both_apis(server):
    with server.client() as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert docs.status_code == 200
    assert {"/api/remove", "/v1/remove", "/metrics", "/healthz", "/readyz"} <= set(schema["paths"])
    form = schema["paths"]["/api/remove"]["post"]["requestBody"]["content"]
    fields = next(iter(form.values()))["schema"]
    if "$ref" in fields:
        fields = schema["components"]["schemas"][fields["$ref"].rsplit("/", 1)[1]]
    assert {"file", "model", "a", "af", "ab", "ae", "om", "ppm", "bgc"} <= set(fields["properties"])


def test_schemathesis_finds_no_server_error_or_schema_violation(server, matting_compiled):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    # an alpha-matting request before the kernels are loaded is a 503 by design (retry later)
    ready = "alpha matting ready"
    wait_for(lambda: ready in server.log_text(), timeout=600, what=ready)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures = []

    def explore(operation):
        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            try:
                case.call_and_validate(base_url=server.url, checks=checks, timeout=60)
            except Exception as exc:  # noqa: BLE001 - collect every operation's failures
                failures.append(f"{operation.label}: {str(exc)[:500]}")

        run()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:
        explore(operation)
    assert not failures, "\n".join(failures[:5])


def test_one_session_for_eight_simultaneous_first_requests(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--no-warmup", "--slots", "2")
    try:
        assert server.metric("rmcli_serve_sessions") == 0
        barrier = threading.Barrier(8)

        def first(_):
            with server.client() as client:
                barrier.wait()
                return client.post("/api/remove", files={"file": car_bytes()}).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(first, range(8))) == [200] * 8
        assert server.metric("rmcli_serve_session_builds_total") == 1
        assert server.metric("rmcli_serve_sessions") == 1
    finally:
        assert server.stop() == 0


def test_full_queue_answers_503_with_retry_after_at_once(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--slots", "1", "--queue", "1")
    big = jpeg(1600, 1200)
    try:
        answers = post_at_once(server, 8, "/v1/remove", {"file": ("big.jpg", big)})
        statuses = sorted(a.status_code for a in answers)
        assert set(statuses) == {200, 503}, statuses
        assert statuses.count(200) <= 2  # one slot + one queue place
        for answer in answers:
            if answer.status_code == 503:
                assert answer.headers["Retry-After"] == "1"
                assert "busy" in one_line_error(answer, 503)
        assert server.metric("rmcli_serve_rejected_total", reason="queue_full") == statuses.count(
            503
        )
    finally:
        assert server.stop() == 0


def test_deadline_answers_503_instead_of_a_late_image(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--deadline", "0.05")
    try:
        with server.client() as client:
            answer = client.post("/v1/remove", files={"file": ("big.jpg", jpeg(1600, 1200))})
            assert "deadline of 0.05 s" in one_line_error(answer, 503)
            assert answer.headers["Retry-After"] == "1"
            assert client.get("/healthz").status_code == 200
        wait_for(lambda: server.metric("rmcli_serve_inflight_inferences") == 0, what="idle")
        assert server.metric("rmcli_serve_rejected_total", reason="deadline") == 1
    finally:
        assert server.stop() == 0


def test_work_that_cannot_finish_by_the_deadline_is_refused_at_once(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--slots", "1", "--deadline", "4")
    big = jpeg(1600, 1200)
    try:
        with server.client() as client:  # one answer measures how long a slot is held
            assert client.post("/v1/remove", files={"file": ("big.jpg", big)}).status_code == 200
        answers = post_at_once(server, 24, "/v1/remove", {"file": ("big.jpg", big)})
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 503} and 200 in statuses, statuses
        refused = [one_line_error(a, 503) for a in answers if a.status_code == 503]
        early = [reason for reason in refused if "needs about" in reason]
        assert early, refused  # 24 x 1 slot cannot all fit in 4 s: the last are told at once
        assert server.metric("rmcli_serve_rejected_total", reason="deadline") == len(refused)
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def guarded(u2netp_path, tmp_path_factory):
    """A token, URL fetching on with 127.0.0.1 allowed, 1 MB fetch cap, one slot."""
    folder = tmp_path_factory.mktemp("guarded")
    env = {
        "RMCLI_SERVE_TOKEN": "s3cret-token",
        "RMCLI_SERVE_URL_FETCH": "true",
        "RMCLI_SERVE_URL_ALLOW": "127.0.0.1/32",
        "RMCLI_SERVE_URL_MAX_BYTES": "1000000",
        "RMCLI_SERVE_SLOTS": "1",
        "RMCLI_SERVE_CORS_ORIGINS": "http://app.example",
    }
    started = start_server(folder, env=env)
    yield started
    assert started.stop() == 0, started.log_text()


def test_bearer_token_is_required_except_for_probes_and_page(guarded):
    import httpx

    with httpx.Client(base_url=guarded.url, timeout=60) as anonymous:
        files = {"file": car_bytes()}
        assert anonymous.post("/api/remove", files=files).status_code == 401
        wrong = anonymous.post(
            "/api/remove", files=files, headers={"Authorization": "Bearer s3cret-tokeN"}
        )
        assert "bearer token" in one_line_error(wrong, 401)
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/").status_code == 200
    with guarded.client() as client:
        png_of(client.post("/api/remove", files={"file": car_bytes()}))


class _Images:
    """Loopback HTTP servers for URL fetching: 127.0.0.1 (allowed) and 127.0.0.2 (not)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[tuple[str, str, str]] = []
        images = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                images.hits.append((self.server.server_address[0], self.path, self.headers["Host"]))
                if self.path.startswith("/redirect-out"):
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.2:{images.other}/car.jpg")
                    self.end_headers()
                elif self.path.startswith("/redirect-in"):
                    self.send_response(302)
                    self.send_header("Location", "/car.jpg")
                    self.end_headers()
                else:
                    body = car_bytes() if self.path == "/car.jpg" else b"\xff" * 1_500_000
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    if self.path != "/big-unannounced":
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.servers = [
            ThreadingHTTPServer((host, 0), Handler) for host in ("127.0.0.1", "127.0.0.2")
        ]
        self.port = self.servers[0].server_address[1]
        self.other = self.servers[1].server_address[1]
        for http_server in self.servers:
            threading.Thread(target=http_server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for http_server in self.servers:
            http_server.shutdown()
            http_server.server_close()


@pytest.fixture
def images():
    started = _Images()
    yield started
    started.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/x.jpg", "private"),
        ("http://192.168.0.1/x.jpg", "private"),
    ],
)
def test_addresses_off_this_machine_are_refused_before_any_connection(url, kind):
    """Checked in this process by the guard the service runs (a literal address is never
    resolved or connected to), so a bug here cannot send traffic off the machine."""
    import asyncio

    from rmcli.serve.http_errors import ServeError
    from rmcli.serve.url_fetch import UrlPolicy, checked_target

    with pytest.raises(ServeError, match=kind) as refused:
        asyncio.run(checked_target(url, UrlPolicy(1000)))
    assert refused.value.status == 403


def test_url_fetching_refuses_what_is_not_public(guarded, images):
    refused = {
        f"http://127.0.0.2:{images.other}/car.jpg": (403, "loopback"),
        f"http://[::1]:{images.port}/car.jpg": (403, "loopback"),
        f"http://[::ffff:127.0.0.2]:{images.other}/car.jpg": (403, "loopback"),
        "http://0.0.0.0/x.jpg": (403, "unspecified"),
        "file:///etc/passwd": (400, "only http and https"),
        "ftp://127.0.0.1/x.jpg": (400, "only http and https"),
        f"http://127.0.0.1:{images.port}/redirect-out": (403, "127.0.0.2"),
        f"http://127.0.0.1:{images.port}/big": (413, "serve_url_max_bytes"),
        f"http://127.0.0.1:{images.port}/big-unannounced": (413, "serve_url_max_bytes"),
    }
    with guarded.client() as client:
        for url, (status, words) in refused.items():
            reason = one_line_error(client.get("/api/remove", params={"url": url}), status)
            assert words in reason, (url, reason)
        fetched = client.get(
            "/api/remove", params={"url": f"http://127.0.0.1:{images.port}/redirect-in"}
        )
    assert png_of(fetched).size == (480, 360)
    assert all(host == "127.0.0.1" for host, _, _ in images.hits), images.hits


def test_url_fetch_connects_to_the_checked_address_only(images):
    import asyncio

    from rmcli.serve.http_errors import ServeError
    from rmcli.serve.url_fetch import UrlPolicy, fetch

    policy = UrlPolicy.from_text("127.0.0.1/32", 1_000_000)
    url = f"http://images.example:{images.port}/car.jpg"

    async def public_then_rebound(host, port):  # the DNS answer a rebinding attack gives
        return ["127.0.0.1"]

    async def one_bad_address(host, port):
        return ["127.0.0.1", "127.0.0.2"]

    assert asyncio.run(fetch(url, policy, resolver=public_then_rebound)) == car_bytes()
    assert images.hits[-1] == ("127.0.0.1", "/car.jpg", f"images.example:{images.port}")
    with pytest.raises(ServeError, match="127.0.0.2, a loopback address"):
        asyncio.run(fetch(url, policy, resolver=one_bad_address))
    assert len(images.hits) == 1


def test_client_that_disconnects_frees_its_queued_work(guarded):
    big = jpeg(1600, 1200)
    before = guarded.metric("rmcli_serve_stage_seconds_count", stage="inference")

    def blocker(_):
        with guarded.client() as client:
            return client.post("/v1/remove", files={"file": ("big.jpg", big)}).status_code

    with ThreadPoolExecutor(4) as pool:
        blocked = pool.map(blocker, range(4))
        wait_for(lambda: guarded.metric("rmcli_serve_queue_depth") >= 2, what="a queue")
        queued = guarded.metric("rmcli_serve_queue_depth")
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n" + car_bytes() + b"\r\n--b--\r\n"
        )
        host, port = guarded.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as raw:
            raw.sendall(
                b"POST /v1/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Authorization: Bearer s3cret-token\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            wait_for(
                lambda: (
                    guarded.metric("rmcli_serve_queue_depth") > queued
                    or guarded.metric("rmcli_serve_queue_depth") == 0
                ),
                what="the raw request queued",
            )
            assert guarded.metric("rmcli_serve_queue_depth") > 0, "the blockers finished too soon"
        assert list(blocked) == [200] * 4
    wait_for(
        lambda: (
            guarded.metric(
                "rmcli_serve_requests_total", endpoint="/v1/remove", model="u2netp", status="499"
            )
            == 1
        ),
        what="the disconnect counted",
    )
    after = guarded.metric("rmcli_serve_stage_seconds_count", stage="inference")
    assert after - before == 4  # the blockers only: the abandoned request never ran


def test_sigterm_drains_requests_in_flight_then_exits_0(u2netp_path, tmp_path):
    server = start_server(tmp_path, "--slots", "1", "--grace", "60")
    big = jpeg(1600, 1200)

    def send(_):
        with server.client() as client:
            return client.post("/v1/remove", files={"file": ("big.jpg", big)}).status_code

    with ThreadPoolExecutor(3) as pool:
        answers = pool.map(send, range(3))
        wait_for(lambda: server.metric("rmcli_serve_admitted") == 3, what="3 requests inside")
        server.process.send_signal(15)
        assert list(answers) == [200, 200, 200]
    assert server.process.wait(60) == 0
    log = server.log_text()
    assert "SIGTERM: draining" in log and "Traceback" not in log


def test_sessions_of_several_models_are_bounded(u2netp_path, tmp_path):
    server = start_server(tmp_path, env={"RMCLI_SERVE_MAX_SESSIONS": "1"})
    try:
        with server.client() as client:
            for model in ("studio-white", "u2netp", "studio-white"):
                answer = client.post(
                    "/api/remove", files={"file": car_bytes()}, data={"model": model}
                )
                assert answer.status_code == 200, answer.text
                assert server.metric("rmcli_serve_sessions") == 1
            models = client.get("/v1/models").json()
        assert server.metric("rmcli_serve_session_builds_total") == 4  # warm-up + 3 switches
        assert models["default"] == "u2netp" and "studio-white" in models["models"]
    finally:
        assert server.stop() == 0


def test_page_in_headless_chromium(server, tmp_path):
    import shutil

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').options.length > 0")
            assert page.input_value("#model") == "u2netp"
            offered = page.eval_on_selector_all("#model option", "all => all.map(o => o.value)")
            page.set_input_files("#file", str(CAR))
            page.click("#run")
            page.wait_for_function(
                "document.getElementById('result').naturalWidth > 0", timeout=120_000
            )
            assert page.text_content("#status").startswith("Done")
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "download.png"
            download.value.save_as(saved)
            text = tmp_path / "notes.txt"
            text.write_text("not an image")
            page.set_input_files("#file", str(text))
            page.click("#run")
            page.wait_for_function("document.getElementById('status').className === 'error'")
            error = page.text_content("#status")
            # the earlier cut-out and its Download link are gone: they were not this request's
            assert page.get_attribute("#result", "src") is None
            assert page.is_hidden("#download") and page.get_attribute("#download", "href") is None
        finally:
            browser.close()
    # the model list offers the models whose weights the server has, not the whole catalogue
    listed = json.loads(rmcli("models", "list", "--json").stdout)  # the server's models dir
    assert offered == [m["name"] for m in listed if m["cached"]]
    assert "u2netp" in offered and "birefnet-massive" not in offered
    with server.client() as client:
        expected = png_of(client.post("/v1/remove", files={"file": car_bytes()}))
    downloaded = Image.open(saved)
    assert downloaded.size == (480, 360) and downloaded.mode == "RGBA"
    assert np.array_equal(alpha_of(downloaded), alpha_of(expected))
    assert "not an image" in error and "HTTP 400" in error


def test_serve_settings_come_from_the_layered_table():
    done = rmcli("serve", env={"RMCLI_SERVE_PORT": "seven"})
    assert done.returncode == 2
    assert (
        done.stderr.decode().strip() == "rmcli: error: RMCLI_SERVE_PORT='seven' is not an integer"
    )


def test_serve_takes_the_session_flags_and_its_own_url_fetch_switch():
    for args, reason in (
        (("--precision", "fp8"), "precision"),  # a session setting shared with remove
        (("--url-fetch", "--port", "70000"), "port"),  # parsed --url-fetch, then refused
    ):
        done = rmcli("serve", *args)
        stderr = done.stderr.decode()
        assert done.returncode == 2 and "no such option" not in stderr, stderr
        assert stderr.count("\n") == 1 and reason in stderr, stderr
    done = rmcli("remove", "--serve-url-fetch", "x.jpg")
    assert done.returncode == 2 and "no such option" in done.stderr.decode()
