"""The worker's HTTP surface: generate (plain and SSE), health, readiness, metrics, fault hooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ._batcher import Batcher, DoneEvent, ErrorEvent, Job, JobEvent, TokenEvent
from ._engine import DevicePreference, Engine
from ._errors import DeviceLostError, InferenceError, ServiceError
from ._faults import FaultHooks, FaultKind
from ._http import Token, check_token, error_response, install_error_handling
from ._metrics import WorkerMetrics
from ._protocol import WORKER_FAULTS_PATH, WORKER_RELOAD_PATH
from ._registry import ModelRef, Registry

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class WorkerSettings:
    ref: ModelRef
    registry: Path
    device: DevicePreference = DevicePreference.AUTO
    max_batch_size: int = 16
    max_wait_ms: float = 10.0
    max_prompt_chars: int = 8000
    fault_hooks: bool = False
    admin_token: str | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS)
    stream: bool = False


class SlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ms_per_token: int = Field(ge=1, le=60_000)


class OomParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int = Field(default=1, ge=1, le=1_000_000)


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WorkerState:
    """Everything one worker process holds; owned by the app, not by module globals."""

    def __init__(
        self, settings: WorkerSettings, announce: Callable[[dict[str, Any]], None]
    ) -> None:
        self.settings = settings
        self.announce = announce
        self.registry = Registry(settings.registry)
        self.metrics = WorkerMetrics()
        self.faults = FaultHooks()
        self.engine: Engine | None = None
        self.ready = False
        self.not_ready_reason = "loading"
        self.request_exit: Callable[[int], None] = lambda _code: None
        self.batcher = Batcher(
            lambda: self.engine,
            faults=self.faults,
            metrics=self.metrics,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            on_device_lost=self.device_lost,
        )
        self._load_lock = threading.Lock()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self.ready = ready
        self.not_ready_reason = reason
        self.metrics.ready.set(1 if ready else 0)

    def load(self) -> None:
        """Verify, load and warm the model (on a thread: it takes seconds)."""
        with self._load_lock:
            self.set_ready(False, "loading")
            self.engine = None
            started = time.monotonic()
            try:
                engine = Engine.load(self.registry, self.settings.ref, self.settings.device)
                self.faults.device = engine.device
                engine.warm_up()
            except ServiceError as exc:
                log.error("model load refused: %s", exc)
                self.set_ready(False, f"model load refused: {exc}")
                self.announce(
                    {"event": "load_refused", "model": str(self.settings.ref), "error": str(exc)}
                )
                return
            self.engine = engine
            self.set_ready(True)
            self.announce(
                {
                    "event": "ready",
                    "model": str(self.settings.ref),
                    "device": engine.device,
                    "load_s": round(time.monotonic() - started, 3),
                }
            )

    def device_lost(self, exc: DeviceLostError) -> None:
        if not self.ready and self.not_ready_reason.startswith("device lost"):
            return
        log.error("%s", exc)
        self.set_ready(False, f"device lost: {exc}")
        self.announce({"event": "device_lost", "error": str(exc)})
        self.request_exit(EXIT_DEVICE_LOST)


EXIT_DEVICE_LOST = 3


def create_app(state: WorkerState) -> FastAPI:
    settings = state.settings

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        batcher_task = asyncio.create_task(state.batcher.run(), name="batcher")
        loader = loop.run_in_executor(None, state.load)
        try:
            yield
        finally:
            # Release a hung inference thread so shutdown is never blocked by a fault hook.
            state.faults.clear_all()
            batcher_task.cancel()
            state.batcher.shutdown()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await batcher_task
            loader.cancel()

    app = FastAPI(title="ichaos worker", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.worker = state

    install_error_handling(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "alive", "model": str(settings.ref)}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready:
            return JSONResponse({"ready": True, "model": str(settings.ref)})
        return JSONResponse(
            {"ready": False, "model": str(settings.ref), "reason": state.not_ready_reason},
            status_code=503,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        state.metrics.queue_depth.set(state.batcher.depth())
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.post("/v1/generate", response_model=None)
    async def generate(body: GenerateRequest) -> Response:
        started = time.monotonic()
        response = await _generate(state, body)
        state.metrics.requests.labels(status=str(response.status_code)).inc()
        if not isinstance(response, StreamingResponse):
            state.metrics.latency.observe(time.monotonic() - started)
        return response

    _add_admin_routes(app, state)
    return app


async def _generate(state: WorkerState, body: GenerateRequest) -> Response:
    settings = state.settings
    engine = state.engine
    if not state.ready or engine is None:
        return error_response(503, "not_ready", state.not_ready_reason)
    if len(body.prompt) > settings.max_prompt_chars:
        return error_response(
            413,
            "prompt_too_long",
            f"prompt has {len(body.prompt)} characters; the limit is {settings.max_prompt_chars}",
        )
    prompt_tokens = engine.count_tokens(body.prompt)
    if prompt_tokens + body.max_new_tokens > engine.max_positions:
        return error_response(
            413,
            "prompt_too_long",
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({body.max_new_tokens}) exceeds "
            f"the model's context of {engine.max_positions} tokens",
        )
    job = state.batcher.submit(body.prompt, body.max_new_tokens)
    first = await job.events.get()
    if isinstance(first, ErrorEvent):
        return _inference_error(first.error)
    if body.stream:
        return StreamingResponse(
            _sse(state, job, first),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    pieces: list[str] = []
    event: JobEvent = first
    while True:
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
        elif isinstance(event, DoneEvent):
            return JSONResponse(_summary(state, job, "".join(pieces), event))
        else:
            return _inference_error(event.error)
        event = await job.events.get()


def _summary(state: WorkerState, job: Job, text: str, done: DoneEvent) -> dict[str, Any]:
    return {
        "text": text,
        "model": state.settings.ref.name,
        "version": state.settings.ref.version,
        "tokens": done.tokens,
        "finish_reason": done.finish_reason,
        "timings": {"queue_ms": round(job.queue_ms, 3), "inference_ms": round(job.inference_ms, 3)},
    }


def _inference_error(error: InferenceError) -> JSONResponse:
    return error_response(500, error.error_type, str(error))


def _sse_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _sse(state: WorkerState, job: Job, first: JobEvent) -> AsyncIterator[bytes]:
    started = job.enqueued
    pieces: list[str] = []
    event = first
    index = 0
    while True:
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
            yield _sse_event("token", {"index": index, "text": event.text})
            index += 1
        elif isinstance(event, DoneEvent):
            state.metrics.latency.observe(time.monotonic() - started)
            yield _sse_event("done", _summary(state, job, "".join(pieces), event))
            return
        else:
            err = event.error
            yield _sse_event("error", {"error": {"type": err.error_type, "message": str(err)}})
            return
        event = await job.events.get()


def _add_admin_routes(app: FastAPI, state: WorkerState) -> None:
    settings = state.settings
    params_for: dict[FaultKind, type[BaseModel]] = {
        FaultKind.GPU_ERROR: NoParams,
        FaultKind.HANG: NoParams,
        FaultKind.SLOW: SlowParams,
        FaultKind.OOM: OomParams,
    }

    def check(token: str | None, *, hooks: bool) -> JSONResponse | None:
        # Hooks that are not enabled do not exist: 404, as for any unknown path.
        enabled = settings.fault_hooks or not hooks
        return check_token(settings.admin_token if enabled else None, token)

    @app.get(WORKER_FAULTS_PATH)
    async def list_faults(token: Token = None) -> Response:
        denied = check(token, hooks=True)
        return denied or JSONResponse(state.faults.snapshot().as_dict())

    @app.post(WORKER_FAULTS_PATH + "/{kind}")
    async def set_fault(kind: str, request: Request, token: Token = None) -> Response:
        if denied := check(token, hooks=True):
            return denied
        try:
            fault = FaultKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in FaultKind)
            return error_response(404, "unknown_fault", f"unknown fault {kind!r}: one of {choices}")
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        try:
            params = params_for[fault].model_validate(payload)
        except Exception as exc:  # pydantic.ValidationError, or a non-object payload
            return error_response(422, "invalid_request", f"{fault.value}: {exc}")
        if isinstance(params, SlowParams):
            state.faults.slow(params.ms_per_token)
        elif isinstance(params, OomParams):
            state.faults.oom(params.count)
        elif fault is FaultKind.HANG:
            state.faults.hang()
        else:
            state.faults.arm_gpu_error()
        log.warning("fault hook set: %s %s", fault.value, payload)
        return JSONResponse(state.faults.snapshot().as_dict())

    @app.delete(WORKER_FAULTS_PATH + "/{kind}")
    async def clear_fault(kind: str, token: Token = None) -> Response:
        if denied := check(token, hooks=True):
            return denied
        if kind == "all":
            state.faults.clear_all()
        else:
            try:
                state.faults.clear(FaultKind(kind))
            except ValueError:
                return error_response(404, "unknown_fault", f"unknown fault {kind!r}")
        log.warning("fault hook cleared: %s", kind)
        return JSONResponse(state.faults.snapshot().as_dict())

    @app.post(WORKER_RELOAD_PATH)
    async def reload(token: Token = None) -> Response:
        if denied := check(token, hooks=False):
            return denied
        asyncio.get_running_loop().run_in_executor(None, state.load)
        return JSONResponse({"reloading": str(settings.ref)}, status_code=202)
