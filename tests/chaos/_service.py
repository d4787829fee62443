"""A model-server-shaped loopback service whose failures a test controls (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chaos import wait_until


class Service:
    def __init__(self) -> None:
        self.failing = False
        self.ready = True
        self.hanging = False  # answers wait while set (and go out once it is cleared)
        # Its own metrics, as a model server exposes them: the queue is 7 deep while failing.
        self.registry = CollectorRegistry()
        self.queue = Gauge("scripted_queue_depth", "Requests waiting", registry=self.registry)
        self.requests = Counter(
            "scripted_requests", "Generate requests", ["outcome"], registry=self.registry
        )
        self.batch = Histogram(
            "scripted_batch_size", "Requests per batch", buckets=(1, 2, 4, 8),
            registry=self.registry,
        )  # fmt: skip

    async def generate(self, _request: Request) -> Response:
        # Polled: the switch is flipped from the test's thread, and an asyncio.Event belongs
        # to the server's loop in its own thread.
        while self.hanging:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.requests.labels(outcome="failed" if self.failing else "ok").inc()
        self.batch.observe(4 if self.failing else 1)
        if self.failing:
            return JSONResponse({"error": {"type": "worker_failed"}}, status_code=503)
        return JSONResponse(
            {"text": "ok", "model": "primary", "version": "v1", "tokens": 2, "degraded": False}
        )

    async def readyz(self, _request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"alive": True})

    async def metrics(self, _request: Request) -> Response:
        self.queue.set(7 if self.failing else 0)
        return Response(generate_latest(self.registry), media_type="text/plain; version=0.0.4")


@contextmanager
def serve(service: Service) -> Iterator[str]:
    """Serve ``service`` on an OS-assigned loopback port; yields its URL."""
    app = Starlette(
        routes=[
            Route("/v1/generate", service.generate, methods=["POST"]),
            Route("/readyz", service.readyz),
            Route("/healthz", service.healthz),
            Route("/metrics", service.metrics),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=10, message="test server started")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
