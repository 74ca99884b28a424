"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from rmcli.engine.session import SESSIONS

disable_created_metrics()  # no *_created series: half the output, nothing anyone graphs

if TYPE_CHECKING:
    from rmcli.serve.service import InferenceService

STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Requests by endpoint, model and status; stage latencies; queue, slots, sessions, CPU."""

    def __init__(self, service: InferenceService) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, fds
        self.requests = Counter(
            "rmcli_serve_requests",
            "HTTP requests answered, by endpoint, model and status (499: client went away).",
            ["endpoint", "model", "status"],
            registry=registry,
        )
        self.stages = Histogram(
            "rmcli_serve_stage_seconds",
            "Seconds per stage of a cut-out: queue, decode, inference, encode.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "rmcli_serve_request_seconds",
            "Seconds from a request's arrival to its answer, by endpoint.",
            ["endpoint"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.rejected = Counter(
            "rmcli_serve_rejected",
            "Requests refused with 503 before any work, by reason "
            "(queue_full, deadline, unavailable).",
            ["reason"],
            registry=registry,
        )
        gauge = Gauge(
            "rmcli_serve_queue_depth", "Requests waiting for an inference slot.", registry=registry
        )
        gauge.set_function(lambda: service.scheduler.waiting)
        gauge = Gauge(
            "rmcli_serve_inflight_inferences",
            "Inference slots in use (decoding or running the model).",
            registry=registry,
        )
        gauge.set_function(lambda: service.scheduler.busy)
        gauge = Gauge(
            "rmcli_serve_slots",
            "Inference slots (the core budget's K; dask: the workers' threads).",
            registry=registry,
        )
        gauge.set_function(lambda: service.scheduler.slots)
        gauge = Gauge(
            "rmcli_serve_intra_threads",
            "Intra-op threads of each inference slot (dask: of each worker thread's).",
            registry=registry,
        )
        gauge.set_function(lambda: service.intra_threads)
        gauge = Gauge("rmcli_serve_sessions", "ONNX Runtime sessions loaded.", registry=registry)
        gauge.set_function(lambda: len(SESSIONS))
        self.session_builds = Counter(
            "rmcli_serve_session_builds",
            "ONNX Runtime sessions built (a second build of one model means it was evicted).",
            registry=registry,
        )
        self.admitted = Gauge(
            "rmcli_serve_admitted",
            "Inference requests inside the server (queued, running or encoding).",
            registry=registry,
        )
        self.model_queue = Gauge(
            "rmcli_serve_model_queue_depth",
            "Requests waiting for an inference slot, by model.",
            ["model"],
            registry=registry,
        )
        self.model_inflight = Gauge(
            "rmcli_serve_model_inflight",
            "Inference slots in use, by model.",
            ["model"],
            registry=registry,
        )
        self.model_memory = Gauge(
            "rmcli_serve_model_memory_bytes",
            "Memory counted against serve_memory_budget, by model (its session and the "
            "inferences its arena holds; 0: not loaded).",
            ["model"],
            registry=registry,
        )
        self.model_evictions = Gauge(
            "rmcli_serve_model_evictions",
            "Sessions evicted to keep within serve_memory_budget, by model.",
            ["model"],
            registry=registry,
        )
        gauge = Gauge(
            "rmcli_serve_memory_budget_bytes", "serve_memory_budget in bytes.", registry=registry
        )
        gauge.set_function(lambda: service.memory.total)
        service.observe_with(lambda stage, seconds: self.stages.labels(stage).observe(seconds))
        self._service = service
        self._builds_seen = SESSIONS.builds  # builds of this process before this app

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        builds = SESSIONS.builds
        if builds > self._builds_seen:
            self.session_builds.inc(builds - self._builds_seen)
            self._builds_seen = builds
        service = self._service
        queues = service.scheduler.queues()
        loaded = service.memory.loaded()
        names = set(queues) | set(loaded) | set(service.memory.costs)
        for name in names:
            self.model_queue.labels(name).set(queues.get(name, 0))
            self.model_inflight.labels(name).set(service.scheduler.running.get(name, 0))
            self.model_memory.labels(name).set(loaded.get(name, 0))
            self.model_evictions.labels(name).set(service.memory.evictions.get(name, 0))
        return generate_latest(self.registry)
