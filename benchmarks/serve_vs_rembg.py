"""``rmcli serve`` against ``rembg s`` (2.0.86) under concurrent clients, as ratios in one run.

    python benchmarks/serve_vs_rembg.py [--rembg-venv DIR] [--variant NAME=PYTHON::ARGS ...]

Starts ``rembg s --no-ui`` (rembg[cli] 2.0.86 in its own venv, benchmarks/.rembg-venv, made
once as bench_vs_rembg.py makes it; the u2netp weights from rmcli's store are placed in a
temporary U2NET_HOME), measures it, stops it, then does the same
with ``rmcli serve`` (default settings), both on 127.0.0.1 only. Every request POSTs the same
photo (examples/car-1.jpg) with model u2netp to ``/api/remove``, the form both servers take.

For each number of clients at once (1, 4, 16, 32; and 64 for rmcli) a bounded number of
requests is sent by that many threads, each with its own keep-alive connection, one request
after another. A 503 is counted and, as a well-behaved client does, followed by a pause of
its Retry-After. Printed per server and level: req/s (200 answers / wall), p50 and p99 of the
200 answers' latency, the slowest 200 and the slowest 503, server peak RSS (VmHWM, reset
before each level, and sampled VmRSS) and the count of each status. Then the issue's targets
as ratios, for rmcli serve at its defaults and for every ``--variant``: another ``rmcli
serve`` measured in the same run, e.g. ``--variant "openvino-bf16=/venv-ov/bin/python::
--backend openvino --precision bf16"`` (onnxruntime-openvino lives in its own environment) or
``--variant "dask=::--executor dask"`` (PYTHON empty: this interpreter).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench_vs_rembg import DEFAULT_VENV, ensure_rembg, u2netp_weights

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "car-1.jpg"
LEVELS = {1: 24, 4: 32, 16: 48, 32: 64, 64: 128}  # clients -> requests
RSS_CAP_MB = 14_000  # the machine is shared: a server above this is stopped


@dataclass
class Level:
    clients: int
    requests: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of 200 answers
    refusals: list[float] = field(default_factory=list)  # seconds until each 503
    statuses: dict[int, int] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rps(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nu2netp\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="car-1.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_peak(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def run_level(port: int, pid: int, clients: int, requests: int, timeout: float) -> Level:
    level = Level(clients, requests)
    body, content_type = multipart(IMAGE.read_bytes())
    lock = threading.Lock()
    left = [requests]
    done = threading.Event()
    sampled = [0.0]

    def sampler() -> None:
        while not done.is_set():
            sampled[0] = max(sampled[0], rss_mb(pid))
            if sampled[0] > RSS_CAP_MB:
                level.errors.append(f"server RSS over {RSS_CAP_MB} MB: stopped")
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        while True:
            with lock:
                if left[0] <= 0:
                    break
                left[0] -= 1
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/remove", body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                status = response.status
                retry = response.getheader("Retry-After")
            except (OSError, http.client.HTTPException) as exc:
                status, retry = 0, None
                with lock:
                    level.errors.append(type(exc).__name__)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            seconds = time.perf_counter() - started
            with lock:
                level.statuses[status] = level.statuses.get(status, 0) + 1
                if status == 200:
                    level.latencies.append(seconds)
                elif status == 503:
                    level.refusals.append(seconds)
            if status == 503 and retry:
                time.sleep(float(retry))
        connection.close()

    reset_peak(pid)
    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.wall = time.perf_counter() - started
    done.set()
    watcher.join()
    level.peak_rss_mb = max(sampled[0], rss_mb(pid, "VmHWM"))
    return level


def wait_ready(port: int, path: str, process: subprocess.Popen, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {limit} s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench(name: str, cmd: list[str], env: dict, ready_path: str, levels: list[int]) -> list[Level]:
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in cmd]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    results = []
    try:
        wait_ready(port, ready_path, process)
        run_level(port, process.pid, 1, 3, 120)  # warm-up: rembg builds its session now
        for clients in levels:
            level = run_level(port, process.pid, clients, LEVELS[clients], 120)
            results.append(level)
            print(f"  {name} {row(level)}", file=sys.stderr, flush=True)
            if level.errors and "stopped" in level.errors[-1]:
                break
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return results


def row(level: Level) -> str:
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(level.statuses.items()))
    slowest = max(level.latencies, default=float("nan"))
    refused = f"{max(level.refusals):.2f} s" if level.refusals else "-"
    return (
        f"| {level.clients} | {level.requests} | {level.rps:.2f} | {level.quantile(0.5):.2f} s "
        f"| {level.quantile(0.99):.2f} s | {slowest:.2f} s | {refused} "
        f"| {level.peak_rss_mb:.0f} MB | {statuses} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rembg-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHON::ARGS",
        help="another rmcli serve to measure: its interpreter (empty: this one) and options",
    )
    args = parser.parse_args()
    variants = [("rmcli serve", sys.executable, [])]
    for text in args.variant:
        name, _, rest = text.partition("=")
        python, _, options = rest.partition("::")
        variants.append((f"rmcli serve {name}", python or sys.executable, options.split()))
    rembg_exe = ensure_rembg(args.rembg_venv)  # rembg s needs the cli extra
    weights = u2netp_weights()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(weights, Path(home) / "u2netp.onnx")
        env = {**os.environ, "U2NET_HOME": home, "BROWSER": "true"}
        rembg_cmd = [str(rembg_exe), "s", "--no-ui", "--host", "127.0.0.1", "--port", "{port}"]
        rembg = bench("rembg s", rembg_cmd, env, "/api", [1, 4, 16, 32])
    measured = [("rembg s 2.0.86", rembg)]
    for name, python, options in variants:
        cmd = [python, "-m", "rmcli", "serve", "--port", "{port}", "--log-level", "warning"]
        cmd += ["--client-connections", "128"]  # all 64 clients come from 127.0.0.1
        levels = bench(name, cmd + options, dict(os.environ), "/readyz", [1, 4, 16, 32, 64])
        measured.append((name, levels))
    load_after = os.getloadavg()
    header = (
        "| clients at once | requests | req/s | p50 | p99 | slowest 200 | slowest 503 "
        "| server peak RSS | statuses |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, levels in measured:
        print(f"\n{name}\n\n{header}")
        for level in levels:
            print(row(level))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    for name, levels in measured[1:]:
        print(f"\ntargets, {name}")
        targets(rembg, levels)


def targets(rembg: list[Level], rmcli: list[Level]) -> None:
    by = lambda levels: {level.clients: level for level in levels}  # noqa: E731
    theirs, ours = by(rembg), by(rmcli)
    lines = []

    def check(text: str, value: float, limit: float, above: bool) -> None:
        ok = value >= limit if above else value <= limit
        sign = ">=" if above else "<="
        lines.append(f"- {text}: {value:.2f} ({sign} {limit}) {'ok' if ok else 'MISSED'}")

    for clients in (16, 32):
        if clients in theirs and clients in ours:
            check(
                f"{clients} clients: rmcli req/s / rembg req/s",
                ours[clients].rps / max(theirs[clients].rps, 1e-9),
                1.6,
                True,
            )
        if clients in ours and 1 in ours:
            check(
                f"{clients} clients: rmcli req/s / rmcli 1-client req/s",
                ours[clients].rps / max(ours[1].rps, 1e-9),
                0.9,
                True,
            )
    if 16 in theirs and 16 in ours:
        check(
            "16 clients: rmcli p99 / rembg p99",
            ours[16].quantile(0.99) / theirs[16].quantile(0.99),
            0.35,
            False,
        )
        check(
            "16 clients: rmcli peak RSS / rembg peak RSS",
            ours[16].peak_rss_mb / max(theirs[16].peak_rss_mb, 1e-9),
            0.15,
            False,
        )
    if 16 in ours and 64 in ours:
        check(
            "rmcli peak RSS 64 clients / 16 clients",
            ours[64].peak_rss_mb / ours[16].peak_rss_mb,
            1.1,
            False,
        )
        level = ours[64]
        others = {k: v for k, v in level.statuses.items() if k not in (200, 503)}
        slowest = max(level.latencies + level.refusals, default=0.0)
        lines.append(
            f"- 64 clients: statuses other than 200/503: {others or 'none'}; slowest answer "
            f"{slowest:.2f} s (deadline 30 s) {'ok' if not others and slowest <= 30 else 'MISSED'}"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
