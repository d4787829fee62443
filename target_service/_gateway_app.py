"""The gateway's HTTP surface: native and OpenAI-compatible generation, admin, health, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._canary import CanaryController
from ._eventlog import EventKind, EventLog
from ._gateway_core import Gateway, ReplicaSpec, Served, Shed, Unavailable
from ._http import (
    Token,
    check_token,
    error_response,
    install_error_handling,
)
from ._metrics import GatewayMetrics
from ._protocol import (
    ADMIN_EVENTS_PATH,
    ADMIN_STATE_PATH,
    ADMIN_TOKEN_HEADER,
    STACK_SECRET_HEADER,
    WORKER_RELOAD_PATH,
)
from ._stack_config import PoolName, StackConfig
from ._worker_app import MAX_NEW_TOKENS

log = logging.getLogger(__name__)

Secret = Annotated[str | None, Header(alias=STACK_SECRET_HEADER)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class GenerateBody(_Strict):
    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS)
    stream: bool = False
    user: str | None = Field(default=None, min_length=1, max_length=256)


class CompletionBody(_Strict):
    model: str | None = None
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1, le=MAX_NEW_TOKENS)
    stream: bool = False
    user: str | None = Field(default=None, min_length=1, max_length=256)


class WeightBody(_Strict):
    weight: float = Field(ge=0, le=100)


class SupervisorEvent(_Strict):
    kind: EventKind
    details: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class GatewaySettings:
    config: StackConfig
    replicas: list[ReplicaSpec]
    admin_token: str | None
    stack_secret: str | None = None
    seed: int | None = None


def _sse(name: str | None, data: Any) -> bytes:
    head = f"event: {name}\n" if name else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n".encode()


class _Render:
    """How one API shapes the answer: the native schema, or OpenAI's completions."""

    def __init__(self, openai: bool, served: Served, requested_model: str | None) -> None:
        self.openai = openai
        self.served = served
        ref = served.attempt.replica.ref
        self.model = f"{ref.name}:{ref.version}"
        self.requested = requested_model
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-Ichaos-Model": self.model,
            "X-Ichaos-Pool": self.served.pool.value,
            "X-Ichaos-Degraded": "true" if self.served.degraded else "false",
        }

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        extra = {"degraded": self.served.degraded, "pool": self.served.pool.value}
        if not self.openai:
            return {**body, **extra}
        tokens = int(body.get("tokens", 0))
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "text": body.get("text", ""),
                    "finish_reason": body.get("finish_reason", "length"),
                    "logprobs": None,
                }
            ],
            "usage": {"completion_tokens": tokens},
            **extra,
        }

    def chunk(self, event: str, data: dict[str, Any]) -> bytes:
        if not self.openai:
            if event == "done":
                data = self.answer(data)
            return _sse(event, data)
        if event == "token":
            choice = {"index": 0, "text": data.get("text", ""), "finish_reason": None}
        elif event == "done":
            choice = {"index": 0, "text": "", "finish_reason": data.get("finish_reason")}
        else:
            return _sse(None, data) + _sse(None, "[DONE]")
        chunk = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if event == "done":
            chunk["degraded"] = self.served.degraded
            return _sse(None, chunk) + _sse(None, "[DONE]")
        return _sse(None, chunk)


async def _relay(gateway: Gateway, served: Served, render: _Render) -> AsyncIterator[bytes]:
    """Pass the upstream's SSE events on, reshaped for the API the client called."""

    async def lines() -> AsyncIterator[str]:
        for raw in served.attempt.head:
            yield raw.decode()
        async for text in gateway.relay(served.attempt):
            yield text

    event = "message"
    async for line in lines():
        if line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            try:
                data = json.loads(line.partition(":")[2])
            except json.JSONDecodeError:
                continue
            yield render.chunk(event, data)


async def _generate(
    gw: Gateway,
    metrics: GatewayMetrics,
    body: dict[str, Any],
    user: str | None,
    *,
    stream: bool,
    openai: bool,
    model: str | None,
) -> Response:
    started = time.monotonic()
    try:
        served = await gw.serve(body, user, stream=stream)
    except Shed as exc:
        metrics.shed.labels(pool=exc.pool.value).inc()
        metrics.requests.labels(pool=exc.pool.value, outcome="shed").inc()
        return error_response(429, "overloaded", str(exc))
    except Unavailable as exc:
        metrics.requests.labels(pool="none", outcome="error").inc()
        return error_response(503, "unavailable", str(exc))
    attempt = served.attempt
    pool = served.pool.value
    metrics.latency.labels(pool=pool).observe(time.monotonic() - started)
    if attempt.status is not None and attempt.status != 200:
        metrics.requests.labels(pool=pool, outcome="client_error").inc()
        return JSONResponse(attempt.body or {}, status_code=attempt.status)
    outcome = "degraded" if served.degraded else "ok"
    metrics.requests.labels(pool=pool, outcome=outcome).inc()
    if served.degraded:
        metrics.fallback.inc()
    render = _Render(openai, served, model)
    if stream:
        return StreamingResponse(
            _relay(gw, served, render),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", **render.headers},
        )
    return JSONResponse(render.answer(attempt.body or {}), headers=render.headers)


def create_gateway_app(
    settings: GatewaySettings, *, on_ready: Callable[[], None] | None = None
) -> FastAPI:
    config = settings.config
    events = EventLog()
    metrics = GatewayMetrics()
    holder: dict[str, Any] = {}

    def gateway() -> Gateway:
        gw: Gateway = holder["gateway"]
        return gw

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=2048, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits, timeout=None) as client:
            gw = Gateway(
                config, settings.replicas, events=events, client=client, seed=settings.seed
            )
            controller = CanaryController(gw, config.gateway.canary)
            if config.gateway.canary.enabled:
                gw.outcome_hooks.append(controller.observe)
            holder.update(gateway=gw, controller=controller)
            await gw.check_health()
            tasks = [asyncio.create_task(gw.health_loop(), name="health")]
            if config.gateway.canary.enabled:
                tasks.append(asyncio.create_task(controller.loop(), name="canary"))
            if on_ready is not None:
                on_ready()
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(title="ichaos gateway", lifespan=lifespan, docs_url=None, redoc_url=None)

    install_error_handling(app)

    @app.post("/v1/generate", response_model=None)
    async def native(body: GenerateBody) -> Response:
        upstream = {"prompt": body.prompt, "max_new_tokens": body.max_new_tokens}
        return await _generate(
            gateway(), metrics, upstream, body.user, stream=body.stream, openai=False, model=None
        )

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionBody) -> Response:
        upstream = {"prompt": body.prompt, "max_new_tokens": body.max_tokens}
        return await _generate(
            gateway(),
            metrics,
            upstream,
            body.user,
            stream=body.stream,
            openai=True,
            model=body.model,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = gateway().ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    _metrics_route(app, gateway, metrics)
    _admin_routes(app, settings, gateway, holder, events)
    return app


def _metrics_route(app: FastAPI, gateway: Callable[[], Gateway], metrics: GatewayMetrics) -> None:
    @app.get("/metrics")
    async def prometheus() -> Response:
        gw = gateway()
        metrics.canary_weight.set(gw.canary_weight)
        for name, pool in gw.pools.items():
            metrics.in_flight.labels(pool=name.value).set(pool.in_flight)
            for replica in pool.replicas:
                labels = {"pool": name.value, "index": str(replica.spec.index)}
                metrics.replica_ready.labels(**labels).set(1 if replica.ready else 0)
                metrics.breaker_open.labels(**labels).set(
                    1 if replica.breaker.state.value == "open" else 0
                )
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)


def _admin_routes(
    app: FastAPI,
    settings: GatewaySettings,
    gateway: Callable[[], Gateway],
    holder: dict[str, Any],
    events: EventLog,
) -> None:
    def denied(token: str | None) -> JSONResponse | None:
        return check_token(settings.admin_token, token)

    @app.get(ADMIN_STATE_PATH)
    async def state(token: Token = None) -> Response:
        if refused := denied(token):
            return refused
        controller: CanaryController = holder["controller"]
        return JSONResponse({**gateway().state(), "canary_controller": controller.last_decision})

    @app.get(ADMIN_EVENTS_PATH)
    async def list_events(token: Token = None, since: Annotated[int, Query(ge=0)] = 0) -> Response:
        if refused := denied(token):
            return refused
        found = events.since(since)
        return JSONResponse({"events": [e.as_dict() for e in found], "last_seq": events.last_seq})

    @app.post("/admin/canary/weight")
    async def set_weight(body: WeightBody, token: Token = None) -> Response:
        if refused := denied(token):
            return refused
        gateway().set_canary_weight(body.weight, reason="admin")
        return JSONResponse({"canary_weight": body.weight})

    @app.post("/admin/canary/promote")
    async def promote(token: Token = None) -> Response:
        if refused := denied(token):
            return refused
        gateway().set_canary_weight(100.0, reason="promote")
        return JSONResponse({"canary_weight": 100.0})

    @app.post("/admin/canary/rollback")
    async def rollback(token: Token = None) -> Response:
        if refused := denied(token):
            return refused
        gateway().set_canary_weight(0.0, reason="rollback", by="admin")
        return JSONResponse({"canary_weight": 0.0})

    @app.post("/admin/replicas/{pool}/{index}/reload")
    async def reload(pool: str, index: int, token: Token = None) -> Response:
        if refused := denied(token):
            return refused
        try:
            name = PoolName(pool)
        except ValueError:
            return error_response(404, "unknown_pool", f"unknown pool {pool!r}")
        replicas = gateway().pools[name].replicas
        if not 0 <= index < len(replicas):
            return error_response(404, "unknown_replica", f"{pool} has no replica {index}")
        replica = replicas[index]
        assert settings.admin_token is not None
        try:
            answer = await gateway().client.post(
                f"{replica.spec.url}{WORKER_RELOAD_PATH}",
                headers={ADMIN_TOKEN_HEADER: settings.admin_token},
                timeout=5,
            )
        except httpx.HTTPError as exc:
            return error_response(502, "replica_unreachable", f"{pool}[{index}]: {exc}")
        events.record(EventKind.REPLICA_RELOAD, **replica.ident, status=answer.status_code)
        replica.set_ready(False, "reloading")
        return JSONResponse(
            {"reload": replica.ident, "status": answer.status_code}, status_code=202
        )

    @app.post("/internal/events")
    async def supervisor_event(request: Request, secret: Secret = None) -> Response:
        expected = settings.stack_secret
        if (
            expected is None
            or secret is None
            or not secrets.compare_digest(secret.encode(), expected.encode())
        ):
            return error_response(403, "forbidden", "not the stack's supervisor")
        try:
            event = SupervisorEvent.model_validate_json(await request.body())
        except ValidationError as exc:
            return error_response(422, "invalid_request", str(exc))
        events.record(event.kind, **event.details)
        return JSONResponse({"recorded": event.kind.value})
