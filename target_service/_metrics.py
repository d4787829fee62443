"""Prometheus metrics of one worker, in a registry of its own (no process-wide globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class WorkerMetrics:
    registry: Any = field(init=False)
    requests: Any = field(init=False)
    latency: Any = field(init=False)
    ttft: Any = field(init=False)
    queue_depth: Any = field(init=False)
    batch_size: Any = field(init=False)
    tokens: Any = field(init=False)
    ready: Any = field(init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ichaos_worker_requests", "Generate requests by HTTP status", ["status"], registry=r
        )
        self.latency = Histogram(
            "ichaos_worker_request_latency_seconds",
            "Generate latency, admission to last token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "ichaos_worker_time_to_first_token_seconds",
            "Time from admission to the first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ichaos_worker_queue_depth", "Requests waiting for a batch", registry=r
        )
        self.batch_size = Histogram(
            "ichaos_worker_batch_size",
            "Requests per generate call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("ichaos_worker_tokens_generated", "Tokens generated", registry=r)
        self.ready = Gauge("ichaos_worker_ready", "1 when the worker is ready", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
