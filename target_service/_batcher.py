"""Dynamic batching: concurrent requests are grouped into one ``generate`` call.

A batch starts when the first request arrives and closes when it holds ``max_batch_size``
requests or ``max_wait`` has passed, whichever comes first. Batches run one at a time on a single
inference thread (one device, one stream); requests arriving meanwhile wait in the queue and form
the next batch. Each request gets its tokens and its outcome through an asyncio queue of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from ._engine import Engine
from ._errors import DeviceLostError, InferenceError
from ._faults import FaultHooks
from ._metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEvent:
    text: str
    kind: Literal["token"] = "token"


@dataclass(frozen=True)
class DoneEvent:
    tokens: int
    finish_reason: str
    kind: Literal["done"] = "done"


@dataclass(frozen=True)
class ErrorEvent:
    error: InferenceError
    kind: Literal["error"] = "error"


JobEvent = TokenEvent | DoneEvent | ErrorEvent


@dataclass
class Job:
    prompt: str
    max_new_tokens: int
    enqueued: float = field(default_factory=time.monotonic)
    started: float | None = None
    first_token: float | None = None
    finished: float | None = None
    events: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)

    @property
    def queue_ms(self) -> float:
        return ((self.started or self.enqueued) - self.enqueued) * 1000

    @property
    def inference_ms(self) -> float:
        if self.started is None or self.finished is None:
            return 0.0
        return (self.finished - self.started) * 1000


class Batcher:
    def __init__(
        self,
        engine: Callable[[], Engine | None],
        *,
        faults: FaultHooks,
        metrics: WorkerMetrics,
        max_batch_size: int,
        max_wait_s: float,
        on_device_lost: Callable[[DeviceLostError], None],
    ) -> None:
        self._engine = engine
        self._faults = faults
        self._metrics = metrics
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_device_lost = on_device_lost
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def submit(self, prompt: str, max_new_tokens: int) -> Job:
        job = Job(prompt, max_new_tokens)
        self._queue.put_nowait(job)
        self._metrics.queue_depth.set(self._queue.qsize())
        return job

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            self._metrics.queue_depth.set(self._queue.qsize())
            await loop.run_in_executor(self._executor, self._run_batch, loop, batch)

    def depth(self) -> int:
        return self._queue.qsize()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # inference thread ------------------------------------------------------------------------
    def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Job]) -> None:
        def post(job: Job, event: JobEvent) -> None:
            loop.call_soon_threadsafe(job.events.put_nowait, event)

        def fail(jobs: list[Job], error: InferenceError) -> None:
            now = time.monotonic()
            for job in jobs:
                if job.finished is None:
                    job.finished = now
                    post(job, ErrorEvent(error))

        now = time.monotonic()
        admitted: list[Job] = []
        for job in batch:
            job.started = now
            try:
                self._faults.take_oom()
            except InferenceError as exc:
                fail([job], exc)
            else:
                admitted.append(job)
        if not admitted:
            return
        engine = self._engine()
        if engine is None:
            fail(admitted, InferenceError("the model is not loaded"))
            return
        self._metrics.batch_size.observe(len(admitted))

        def on_token(row: int, text: str) -> None:
            job = admitted[row]
            if job.first_token is None:
                job.first_token = time.monotonic()
                self._metrics.ttft.observe(job.first_token - job.enqueued)
            post(job, TokenEvent(text))

        def on_finish(row: int, tokens: int, reason: str) -> None:
            job = admitted[row]
            job.finished = time.monotonic()
            self._metrics.tokens.inc(tokens)
            post(job, DoneEvent(tokens, reason))

        try:
            engine.generate(
                [j.prompt for j in admitted],
                [j.max_new_tokens for j in admitted],
                on_token=on_token,
                on_finish=on_finish,
                on_step=self._faults.on_step,
            )
        except DeviceLostError as exc:
            fail(admitted, exc)
            self._on_device_lost(exc)
        except InferenceError as exc:
            fail(admitted, exc)
        except Exception as exc:  # an unexpected failure still answers every waiting client
            log.exception("generate failed")
            fail(admitted, InferenceError(f"{type(exc).__name__}: {exc}"))
