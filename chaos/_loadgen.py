"""The open-loop load generator: requests leave on a precomputed schedule, whatever the target does.

Latency is measured from the *scheduled* send time, so a stalled target cannot hide its stall by
slowing the generator down (no coordinated omission). A start later than ``late_after`` counts as
late; a start refused because ``max_in_flight`` requests are already out counts as dropped. The
generator reports its own schedule lag and CPU use and calls the run invalid when it, not the
target, was the bottleneck.

The client is aiohttp: at 2,000 requests/s it costs about a quarter of a core where httpx's
async client needed most of one at 1,000/s (bench/loadgen.py), and a generator that cannot
keep its own schedule measures itself, not the target.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict

from slo import RequestRecord


@dataclass(frozen=True)
class RequestSpec:
    body: dict[str, Any]
    stream: bool = False
    path: str = "/v1/generate"


@dataclass
class LoadRecord:
    """One request. Times are seconds from the start of the run (monotonic)."""

    index: int
    scheduled: float
    sent: float = math.nan
    first_byte: float | None = None
    first_token: float | None = None
    end: float | None = None
    status: int | None = None
    error: str | None = None
    model: str | None = None
    version: str | None = None
    degraded: bool = False
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)  # between streamed tokens

    @property
    def lag(self) -> float:
        return self.sent - self.scheduled

    @property
    def latency_s(self) -> float | None:
        return None if self.end is None else self.end - self.scheduled

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.scheduled

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (last token - first token) / (tokens - 1),
        the mean of the inter-token gaps; None with fewer than two streamed tokens."""
        return sum(self.gaps) / len(self.gaps) if self.gaps else None

    def to_slo(self) -> RequestRecord:
        return RequestRecord(
            self.scheduled,
            status=self.status,
            latency_s=self.latency_s,
            ttft_s=self.ttft_s,
            degraded=self.degraded,
            error=self.error,
        )


class GeneratorHealth(BaseModel):
    """The generator's own health over a run: requests scheduled, started, late (by more
    than ``late_after``) and dropped (at the in-flight limit); schedule lag percentiles; its
    CPU; and the reasons it, not the target, was the bottleneck (none: the run is valid)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # older journals also say `valid`

    scheduled: int
    started: int
    late: int
    dropped: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    cpu_share: float  # process CPU seconds per wall second, over the run
    reasons: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class LoadResult:
    records: list[LoadRecord]
    health: GeneratorHealth
    started_wall: float  # Unix time of the run's t = 0


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    ):
        return "reset"
    return "transport"


# Idle keep-alive connections are closed before the servers' own idle timeouts (uvicorn: 5 s),
# so a request never goes out on a connection the server is closing at that moment.
_KEEPALIVE_S = 2.0


class LoadGenerator:
    def __init__(
        self,
        url: str,
        schedule: list[float],
        request: Callable[[int], RequestSpec],
        *,
        timeout_s: float = 30.0,
        max_in_flight: int = 1000,
        late_after_s: float = 0.005,
        max_lag_p99_s: float = 0.010,
        max_cpu_share: float = 0.9,
        on_record: Callable[[LoadRecord], None] | None = None,
        origin: float | None = None,
        first_index: int = 0,
    ) -> None:
        """``origin``: the monotonic instant that ``schedule`` counts from (default: when
        :meth:`run` starts), so a second generator can share a run's time axis.
        ``first_index``: the first request's index (a second generator's come after)."""
        self.url = url.rstrip("/")
        self.schedule = schedule
        self.request = request
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.late_after_s = late_after_s
        self.max_lag_p99_s = max_lag_p99_s
        self.max_cpu_share = max_cpu_share
        self.on_record = on_record
        self.origin = origin
        self.first_index = first_index
        self._pending: dict[int, LoadRecord] = {}  # sent, not yet answered
        # Set when the first request is due: t = 0 of the run, on both clocks, so a runner can
        # schedule faults on the same time axis as the requests.
        self.started = threading.Event()
        self.start_monotonic = math.nan
        self.start_wall = math.nan

    async def run(self, stop: asyncio.Event | None = None) -> LoadResult:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(
            limit=self.max_in_flight, keepalive_timeout=_KEEPALIVE_S, ttl_dns_cache=None
        )
        records: list[LoadRecord] = []
        dropped = 0
        in_flight: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=None)  # each request has its own, below
        async with aiohttp.ClientSession(
            self.url, connector=connector, timeout=timeout, auto_decompress=False
        ) as client:
            start = loop.time() if self.origin is None else self.origin
            started_wall = time.time() - (loop.time() - start)
            self.start_monotonic, self.start_wall = start, started_wall
            self.started.set()
            began, cpu_start = loop.time(), time.process_time()
            for index, offset in enumerate(self.schedule):
                if stop is not None and stop.is_set():
                    break
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                record = LoadRecord(self.first_index + index, offset, sent=loop.time() - start)
                records.append(record)
                if len(in_flight) >= self.max_in_flight:
                    # Never sent, yet a request of the schedule: a record like any other (and
                    # a bad one), so that SLOs and expectations count it.
                    dropped += 1
                    record.error = "dropped"
                    record.end = record.sent
                    if self.on_record is not None:
                        self.on_record(record)
                    continue
                self._pending[record.index] = record
                task = asyncio.create_task(self._send(client, record, start))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*in_flight)
            wall = max(loop.time() - began, 1e-9)
            cpu_share = (time.process_time() - cpu_start) / wall
        return LoadResult(records, self._health(records, dropped, cpu_share), started_wall)

    def _health(self, records: list[LoadRecord], dropped: int, cpu: float) -> GeneratorHealth:
        lags = [r.lag for r in records if r.error != "dropped"]
        p99 = nearest_rank(lags, 99)
        reasons = []
        if dropped:
            reasons.append(f"{dropped} requests dropped at the in-flight limit")
        if p99 > self.max_lag_p99_s:
            reasons.append(f"schedule lag p99 {p99 * 1000:.1f} ms > {self.max_lag_p99_s * 1000:g}")
        if cpu > self.max_cpu_share:
            reasons.append(f"generator CPU {cpu:.0%} of a core > {self.max_cpu_share:.0%}")
        return GeneratorHealth(
            scheduled=len(self.schedule),
            started=len(lags),
            late=sum(1 for lag in lags if lag > self.late_after_s),
            dropped=dropped,
            lag_p50_ms=nearest_rank(lags, 50) * 1000,
            lag_p99_ms=p99 * 1000,
            lag_max_ms=max(lags, default=0.0) * 1000,
            cpu_share=cpu,
            reasons=tuple(reasons),
        )

    async def _send(self, client: aiohttp.ClientSession, record: LoadRecord, start: float) -> None:
        loop = asyncio.get_running_loop()

        def now() -> float:
            return loop.time() - start

        try:
            spec = self.request(record.index)
            async with asyncio.timeout(self.timeout_s):
                if spec.stream:
                    await self._stream(client, spec, record, now)
                else:
                    async with client.post(spec.path, json=spec.body) as response:
                        record.first_byte = now()
                        record.status = response.status
                        self._summary(record, _json(await response.read()))
        except (TimeoutError, aiohttp.ClientError) as exc:
            record.error = _classify(exc)
        except Exception as exc:  # one request's surprise is its error, not the generator's end
            record.error = f"client: {type(exc).__name__}: {exc}"[:200]
        record.end = now()
        self._pending.pop(record.index, None)
        if self.on_record is not None:
            self.on_record(record)

    def pending(self) -> list[LoadRecord]:
        """The requests sent and not answered yet (safe to call from another thread)."""
        return list(self._pending.copy().values())

    async def _stream(
        self,
        client: aiohttp.ClientSession,
        spec: RequestSpec,
        record: LoadRecord,
        now: Callable[[], float],
    ) -> None:
        body = {**spec.body, "stream": True}
        async with client.post(spec.path, json=body) as response:
            record.first_byte = now()
            record.status = response.status
            if response.status != 200:
                self._summary(record, _json(await response.read()))
                return
            stream = _StreamReader(record, now, openai=spec.path.endswith("/completions"))
            async for raw in response.content:
                stream.line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            stream.close()

    @staticmethod
    def _summary(record: LoadRecord, data: dict[str, Any] | None) -> None:
        """Read an answer's summary. A 2xx answer without a readable one is an error
        (``malformed``): the service said OK but did not say what it served."""
        ok = record.status is not None and 200 <= record.status < 300
        if not data:
            if ok:
                record.error = "malformed"
            return
        model, version = data.get("model"), data.get("version")
        tokens, degraded = data.get("tokens", 0), data.get("degraded", False)
        usage = data.get("usage")
        if "tokens" not in data and isinstance(usage, dict):  # an OpenAI-shaped answer
            tokens = usage.get("completion_tokens", 0)
        shaped = (
            isinstance(model, str | None) and isinstance(version, str | None)
            and isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0
            and isinstance(degraded, bool)
        )  # fmt: skip
        if not shaped:
            if ok:
                record.error = "malformed"
            return
        record.model, record.version = model, version
        record.degraded, record.tokens = degraded, tokens


class _StreamReader:
    """One SSE stream, line by line, in either format the stack speaks: the native one
    (``event: token`` … ``event: done`` with the summary) or OpenAI's (``data: {chunk}`` …
    ``data: [DONE]``). Every token's arrival is timed; an error event or chunk, or a stream that
    ends without its final event, makes the request an error."""

    def __init__(self, record: LoadRecord, now: Callable[[], float], *, openai: bool) -> None:
        self.record, self.now, self.openai = record, now, openai
        self.event = "message"
        self.last_token: float | None = None
        self.finished = False
        self.counted = 0

    def _token(self) -> None:
        at = self.now()
        if self.last_token is None:
            self.record.first_token = at
        else:
            self.record.gaps.append(at - self.last_token)
        self.last_token = at
        self.counted += 1

    def line(self, line: str) -> None:
        if line.startswith("event:"):
            self.event = line.partition(":")[2].strip()
            return
        if not line.startswith("data:"):
            if not line:
                self.event = "message"  # a blank line ends an SSE event
            return
        payload = line.partition(":")[2].strip()
        if self.openai:
            self._openai(payload)
        elif self.event == "token":
            self._token()
        elif self.event == "done":
            LoadGenerator._summary(self.record, _json(payload.encode()))
            self.finished = True
        elif self.event == "error":
            self.record.error = "stream"

    def _openai(self, payload: str) -> None:
        if payload == "[DONE]":
            self.finished = True
            return
        data = _json(payload.encode())
        if data is None or "error" in data:
            self.record.error = "stream"
            return
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        if not isinstance(choice, dict):
            self.record.error = "stream"
            return
        if choice.get("text"):
            self._token()
        if isinstance(data.get("model"), str):
            self.record.model = data["model"]
        if isinstance(data.get("degraded"), bool):
            self.record.degraded = data["degraded"]

    def close(self) -> None:
        if not self.openai and self.finished and self.record.tokens == 0:
            self.record.tokens = self.counted
        if self.openai:
            self.record.tokens = self.counted
        if not self.finished and self.record.error is None:
            self.record.error = "stream_incomplete"


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return None
    return data if isinstance(data, dict) else None
