"""Prometheus metrics of one worker, in a registry of its own (no process-wide globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Exposition:
    registry: Any

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class WorkerMetrics(_Exposition):
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


@dataclass
class GatewayMetrics(_Exposition):
    registry: Any = field(init=False)
    requests: Any = field(init=False)
    latency: Any = field(init=False)
    fallback: Any = field(init=False)
    shed: Any = field(init=False)
    canary_weight: Any = field(init=False)
    in_flight: Any = field(init=False)
    replica_ready: Any = field(init=False)
    breaker_open: Any = field(init=False)

    def __post_init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ichaos_gateway_requests",
            "Requests by serving pool and outcome (ok, degraded, client_error, error, shed)",
            ["pool", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "ichaos_gateway_request_latency_seconds",
            "Gateway latency by serving pool (to the full answer, or the first token if streamed)",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fallback = Counter(
            "ichaos_gateway_fallback", "Requests served by the fallback pool", registry=r
        )
        self.shed = Counter(
            "ichaos_gateway_shed", "Requests refused with 429 at an in-flight limit", ["pool"],
            registry=r,
        )  # fmt: skip
        self.canary_weight = Gauge(
            "ichaos_gateway_canary_weight", "Percent of traffic sent to the canary", registry=r
        )
        self.in_flight = Gauge(
            "ichaos_gateway_in_flight", "Requests in flight per pool", ["pool"], registry=r
        )
        self.replica_ready = Gauge(
            "ichaos_gateway_replica_ready", "1 when a replica is in rotation", ["pool", "index"],
            registry=r,
        )  # fmt: skip
        self.breaker_open = Gauge(
            "ichaos_gateway_breaker_open", "1 when a replica's breaker is open", ["pool", "index"],
            registry=r,
        )  # fmt: skip
