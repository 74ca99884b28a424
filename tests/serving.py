"""Helpers for the rmcli serve tests: a real server in a subprocess on a loopback ephemeral port."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import CAR, WEIGHTS_CACHE
from PIL import Image

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)/")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    token: str = ""

    def client(self, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers, **kwargs)

    def metrics(self) -> str:
        with self.client() as client:
            return client.get("/metrics").text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one series (0 when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            name_part, _, label_part = series.partition("{")
            found = ",".join(sorted(label_part.rstrip("}").split(","))) if label_part else ""
            if name_part == name and found == wanted:
                return float(value)
        return 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(folder: Path, *args: str, env: dict | None = None, ready: bool = True) -> Server:
    """``rmcli serve --port 0 ARGS`` with an empty config; waits for its address (and /readyz)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RMCLI_")}
    clean.update(
        RMCLI_CONFIG=str(folder / "config.toml"),
        RMCLI_MODELS_DIR=str(WEIGHTS_CACHE),
        U2NET_HOME=str(folder / "no-rembg-cache"),
        **(env or {}),
    )
    log = folder / "server.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "rmcli", "serve", "--port", "0", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=clean,
        )
    server = Server(process, "", log, clean.get("RMCLI_SERVE_TOKEN", ""))
    deadline = time.monotonic() + 120
    while not server.url:
        match = LISTENING.search(server.log_text())
        if match:
            server.url = match[1]
        elif process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"rmcli serve did not start:\n{server.log_text()}")
        else:
            time.sleep(0.05)
    while ready:
        with httpx.Client(timeout=10) as client:
            if client.get(server.url + "/readyz").status_code == 200:
                break
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"rmcli serve never got ready:\n{server.log_text()}")
        time.sleep(0.1)
    return server


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition()`` every 20 ms until true (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def jpeg(width: int, height: int) -> bytes:
    """The car photo scaled to ``width`` x ``height``, as JPEG bytes."""
    buffer = io.BytesIO()
    Image.open(CAR).convert("RGB").resize((width, height)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def car_bytes() -> bytes:
    return CAR.read_bytes()


def post_at_once(server: Server, count: int, path: str, files: dict) -> list[httpx.Response]:
    """``count`` clients POST ``files`` to ``path`` at the same moment (a barrier); answers."""
    barrier = threading.Barrier(count)

    def send(_):
        with server.client() as client:
            barrier.wait()
            return client.post(path, files=files)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))
