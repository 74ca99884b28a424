"""A light and a heavy model behind one server at once: ``rmcli serve`` against ``rembg s``.

    python benchmarks/serve_mixed.py [--heavy PATH] [--rembg-venv DIR] [--skip-rembg]
                                     [--rmcli-args "ARGS" ...]

Two load generators at the same time, loopback only, one photo (examples/car-1.jpg): 12
clients send 48 requests on u2netp, 4 clients send 8 requests on the heavy fp32 ISNet (made
by benchmarks/heavy_model.py, default /root/.cache/rmcli-heavy/isnet-fp32.onnx). Each client
has its own keep-alive connection and sends one request after another; every request is sent
once (a 503 is counted, not retried).

- ``rembg s --no-ui`` (rembg[cli] 2.0.86 in its own venv, as bench_vs_rembg.py makes it):
  u2netp and the ISNet file are copied into a temporary U2NET_HOME; ISNet requests use
  ``model=dis_custom`` with ``extras={"model_path": ...}`` in the query string (rembg reads
  ``extras`` from the query even on POST).
- ``rmcli serve`` (default settings; then once per ``--rmcli-args``, with those options added,
  e.g. ``--rmcli-args "--slots 2"`` or ``--rmcli-args "--memory-budget 1000000000"``, in the
  same run): the ISNet file is a custom model
  ``isnet-heavy`` in a temporary config file, and ``--models u2netp,isnet-heavy`` warms both
  up (measuring their memory) before /readyz answers 200.

Printed: per server and model, the answers by status, req/s (200 answers / the run's wall),
p50 and p99 of the 200 answers' latency; the wall time of the run; the peak RSS of the
server's process tree (VmRSS summed over the process and its children, sampled every 0.1 s);
then the targets as ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench_vs_rembg import DEFAULT_VENV, ensure_rembg, u2netp_weights
from serve_vs_rembg import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "car-1.jpg"
HEAVY = Path("/root/.cache/rmcli-heavy/isnet-fp32.onnx")
LOADS = {"u2netp": (12, 48), "isnet": (4, 8)}  # model: (clients, requests)
RSS_CAP_MB = 14_000  # the machine is shared: a server above this is stopped
TIMEOUT = 300.0


@dataclass
class Load:
    model: str
    latencies: list[float] = field(default_factory=list)  # of 200 answers
    statuses: dict[str, int] = field(default_factory=dict)

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Run:
    name: str
    loads: dict[str, Load]
    wall: float = 0.0
    peak_rss_mb: float = 0.0
    evictions: dict[str, int] = field(default_factory=dict)  # rmcli: sessions evicted, by model


def tree_rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants, MB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def multipart(image: bytes, model: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="car-1.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run_mixed(name: str, port: int, pid: int, requests: dict[str, tuple[str, str]]) -> Run:
    """``requests``: model -> (form model, path with query); both loads at once."""
    image = IMAGE.read_bytes()
    run = Run(name, {model: Load(model) for model in LOADS})
    lock = threading.Lock()
    done = threading.Event()
    peak = [0.0]

    def sampler() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], tree_rss_mb(pid))
            if peak[0] > RSS_CAP_MB:
                os.kill(pid, signal.SIGKILL)
                return

    def client(model: str, count: int) -> None:
        form_model, path = requests[model]
        body, content_type = multipart(image, form_model)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        for _ in range(count):
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": content_type})
                answer = connection.getresponse()
                answer.read()
                status = str(answer.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            seconds = time.perf_counter() - started
            with lock:
                load = run.loads[model]
                load.statuses[status] = load.statuses.get(status, 0) + 1
                if status == "200":
                    load.latencies.append(seconds)
        connection.close()

    threads = []
    for model, (clients, total) in LOADS.items():
        for index in range(clients):
            share = total // clients + (index < total % clients)
            threads.append(threading.Thread(target=client, args=(model, share)))
    watcher = threading.Thread(target=sampler)
    watcher.start()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.wall = time.perf_counter() - started
    done.set()
    watcher.join()
    run.peak_rss_mb = max(peak[0], tree_rss_mb(pid))
    return run


def serve(name: str, cmd: list[str], env: dict, ready: str, requests: dict) -> tuple[Run, str]:
    port = free_port()
    cmd = [part.replace("{port}", str(port)) for part in cmd]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        wait_ready(port, ready, process, limit=300)
        if ready == "/readyz":  # the memory budget and what each warmed-up model holds
            time.sleep(15)  # the models after the default one are warmed up after /readyz
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", ready)
            budget = json.loads(connection.getresponse().read()).get("memory_budget")
            print(f"{name}: memory_budget {budget}", file=sys.stderr, flush=True)
        run = run_mixed(name, port, process.pid, requests)
        if ready == "/readyz":
            run.evictions = evictions(port)
        return run, ""
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.seek(0)
        tail = log.read().decode(errors="replace").splitlines()[-5:]
        if process.returncode not in (0, -signal.SIGTERM):
            print(f"{name} exited {process.returncode}:\n" + "\n".join(tail), file=sys.stderr)


def evictions(port: int) -> dict[str, int]:
    """Sessions rmcli serve evicted to keep within its memory budget, by model (/metrics)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("rmcli_serve_model_evictions{"):
            labels, _, value = line.rpartition(" ")
            found[labels.split('model="')[1].split('"')[0]] = int(float(value))
    return found


def rembg_run(venv: Path, heavy: Path) -> Run:
    exe = ensure_rembg(venv)
    with tempfile.TemporaryDirectory() as home:
        shutil.copy(u2netp_weights(), Path(home) / "u2netp.onnx")
        model_path = Path(home) / heavy.name
        shutil.copy(heavy, model_path)
        extras = urllib.parse.quote(json.dumps({"model_path": str(model_path)}))
        env = {**os.environ, "U2NET_HOME": home, "BROWSER": "true"}
        cmd = [str(exe), "s", "--no-ui", "--host", "127.0.0.1", "--port", "{port}"]
        requests = {
            "u2netp": ("u2netp", "/api/remove"),
            "isnet": ("dis_custom", f"/api/remove?extras={extras}"),
        }
        run, _ = serve("rembg s 2.0.86", cmd, env, "/api", requests)
        return run


def rmcli_run(heavy: Path, extra: list[str]) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.toml"
        config.write_text(f'[models.isnet-heavy]\nfamily = "isnet"\npath = "{heavy}"\n')
        env = {**os.environ, "RMCLI_CONFIG": str(config)}
        cmd = [sys.executable, "-m", "rmcli", "serve", "--port", "{port}"]
        cmd += ["--models", "u2netp,isnet-heavy", "--log-level", "warning", *extra]
        requests = {"u2netp": ("u2netp", "/api/remove"), "isnet": ("isnet-heavy", "/api/remove")}
        name = "rmcli serve " + (" ".join(extra) or "(defaults)")
        run, _ = serve(name, cmd, env, "/readyz", requests)
        return run


def table(runs: list[Run]) -> str:
    lines = [
        "| server | u2netp: statuses, req/s, p50, p99 | ISNet: statuses, req/s, p50, p99 "
        "| peak RSS (process tree) | wall | sessions evicted |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        cells = []
        for load in run.loads.values():
            statuses = ", ".join(f"{n} × {code}" for code, n in sorted(load.statuses.items()))
            cells.append(
                f"{statuses}, {len(load.latencies) / run.wall:.2f}, {load.quantile(0.5):.1f} s, "
                f"{load.quantile(0.99):.1f} s"
            )
        evicted = ", ".join(f"{m} {n}" for m, n in sorted(run.evictions.items())) or "-"
        lines.append(
            f"| {run.name} | {cells[0]} | {cells[1]} | {run.peak_rss_mb / 1024:.2f} GB "
            f"| {run.wall:.0f} s | {evicted} |"
        )
    return "\n".join(lines)


def targets(rembg: Run, ours: Run) -> None:
    def check(text: str, ok: bool) -> None:
        print(f"- {text}: {'met' if ok else 'MISSED'}")

    total = {model: LOADS[model][1] for model in LOADS}
    check(
        "every request answered 200",
        all(load.statuses.get("200", 0) == total[m] for m, load in ours.loads.items()),
    )
    ratio = ours.peak_rss_mb / rembg.peak_rss_mb
    check(f"peak RSS {ratio:.2f}x rembg's (<= 0.25)", ratio <= 0.25)
    for model, limit in (("u2netp", 0.5), ("isnet", 0.6)):
        ratio = ours.loads[model].quantile(0.99) / rembg.loads[model].quantile(0.99)
        check(f"{model} p99 {ratio:.2f}x rembg's (<= {limit})", ratio <= limit)
    ratio = ours.wall / rembg.wall
    check(f"wall {ratio:.2f}x rembg's (<= 0.8)", ratio <= 0.8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heavy", type=Path, default=HEAVY, help="the fp32 ISNet .onnx")
    parser.add_argument("--rembg-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--skip-rembg", action="store_true", help="measure rmcli serve only")
    parser.add_argument(
        "--rmcli-args",
        action="append",
        default=[],
        help="another rmcli serve run with these options added (repeatable)",
    )
    args = parser.parse_args()
    if not args.heavy.is_file():
        raise SystemExit(f"{args.heavy}: not found; make it with benchmarks/heavy_model.py")
    load_before = os.getloadavg()
    runs = []
    if not args.skip_rembg:
        runs.append(rembg_run(args.rembg_venv, args.heavy))
        print(table(runs[-1:]), file=sys.stderr, flush=True)
    for extra in ["", *args.rmcli_args]:
        runs.append(rmcli_run(args.heavy, extra.split()))
        print(table(runs[-1:]), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(table(runs))
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    if not args.skip_rembg:
        for run in runs[1:]:
            print(f"\ntargets, {run.name}")
            targets(runs[0], run)


if __name__ == "__main__":
    main()
