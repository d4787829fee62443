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
import contextlib
import dataclasses
import email.utils
import gc
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict

from slo import RequestRecord

from ._protocols import AnswerRules, Api, StreamReader, parse_json, read_answer

if TYPE_CHECKING:
    from ._scenario import CancelRule, Judged, RetryPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class RequestSpec:
    body: dict[str, Any]
    stream: bool = False
    api: Api = Api.ICHAOS
    client: str | None = None  # the client group that sends it (None: a plain client)
    retry: RetryPolicy | None = None
    cancel: CancelRule | None = None
    seed: int = 0  # its retries' jitter draws

    @property
    def path(self) -> str:
        return self.api.path


@dataclass(frozen=True)
class AttemptRecord:
    """An attempt that was tried again: when it left and ended, and how (run seconds)."""

    sent: float
    end: float
    status: int | None
    error: str | None


@dataclass
class LoadRecord:
    """One logical request: the user's, however many attempts it took. Its fields are its
    last attempt's; ``attempts`` holds the earlier ones. Times are seconds from the start of
    the run (monotonic), latency from the scheduled send to the last attempt's end."""

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
    last_token: float | None = None
    finish_reason: str | None = None
    client: str | None = None
    cancelled: bool = False  # the client closed it (its cancel rule), not the service
    attempts: list[AttemptRecord] = field(default_factory=list)  # the earlier, retried ones
    last_sent: float | None = None  # when the last attempt left (None: the first, at `sent`)

    @property
    def tries(self) -> int:
        """Attempts sent: the earlier ones and the last."""
        return len(self.attempts) + 1

    def retried(self) -> None:
        """This attempt is over and another follows: keep it, and start the record afresh."""
        sent = self.sent if self.last_sent is None else self.last_sent
        end = self.end if self.end is not None else sent
        self.attempts.append(AttemptRecord(sent, end, self.status, self.error))
        self.first_byte = self.first_token = self.last_token = self.end = None
        self.status = self.error = self.model = self.version = self.finish_reason = None
        self.degraded, self.tokens, self.gaps = False, 0, []

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
        """Time per output token after the first: (last token - first token) / (tokens - 1).
        ``tokens`` is the server's count where it gives one (a chunk may carry several), else
        the chunks', when this is the mean inter-token gap. None with fewer than two tokens or
        when not streamed."""
        if self.first_token is None or self.last_token is None or self.tokens < 2:
            return None
        return (self.last_token - self.first_token) / (self.tokens - 1)

    @property
    def output_tps(self) -> float | None:
        """Output tokens per second of this request: tokens / latency (scheduled send to last
        byte); None without tokens or an end."""
        latency = self.latency_s
        if not self.tokens or latency is None or latency <= 0:
            return None
        return self.tokens / latency

    def to_slo(self) -> RequestRecord:
        return RequestRecord(
            self.scheduled,
            status=self.status,
            latency_s=self.latency_s,
            ttft_s=self.ttft_s,
            tpot_s=self.tpot_s,
            itl_s=max(self.gaps) if self.gaps else None,
            degraded=self.degraded,
            error=self.error,
        )


class ShardHealth(BaseModel):
    """One shard of a sharded load: where it ran, its clock's offset to the controller's (and
    the round trip that was measured over), the requests dealt to it and started, its own
    schedule lag p99 and CPU, and why it was not healthy (none: it was)."""

    model_config = ConfigDict(frozen=True)

    shard: int
    node: str
    host: str
    clock_offset_ms: float
    clock_rtt_ms: float
    scheduled: int
    started: int
    lag_p99_ms: float
    cpu_share: float
    lost: bool
    reasons: tuple[str, ...]


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
    cpu_share: float  # process CPU seconds per wall second, over the run (sharded: the most)
    reasons: tuple[str, ...]
    shards: tuple[ShardHealth, ...] = ()  # a sharded load's, each; () for one process

    @property
    def valid(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class LagFigures:
    """The schedule figures of a set of records, the one definition: lag is a request's send
    minus its scheduled time; a request dropped at the in-flight limit was never sent and has
    none; ``late`` counts lags over ``late_after``; percentiles are nearest-rank."""

    started: int
    late: int
    dropped: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, records: list[LoadRecord], late_after: float) -> LagFigures:
        lags = [r.lag for r in records if r.error != "dropped"]
        return cls(
            started=len(lags), late=sum(1 for lag in lags if lag > late_after),
            dropped=len(records) - len(lags), p50=nearest_rank(lags, 50),
            p99=nearest_rank(lags, 99), max=max(lags, default=0.0),
        )  # fmt: skip

    def health(
        self, *, scheduled: int, cpu_share: float, reasons: list[str],
        shards: tuple[ShardHealth, ...] = (),
    ) -> GeneratorHealth:  # fmt: skip
        return GeneratorHealth(
            scheduled=scheduled, started=self.started, late=self.late, dropped=self.dropped,
            lag_p50_ms=self.p50 * 1000, lag_p99_ms=self.p99 * 1000, lag_max_ms=self.max * 1000,
            cpu_share=cpu_share, reasons=tuple(reasons), shards=shards,
        )  # fmt: skip


@dataclass(frozen=True)
class LoadResult:
    records: list[LoadRecord]
    health: GeneratorHealth
    started_wall: float  # Unix time of the run's t = 0


def amplification(records: list[LoadRecord]) -> float | None:
    """Retry amplification, the one definition: attempts sent / logical requests sent (a
    request dropped at the in-flight limit was never sent). 1.0 without retries; None
    without a request."""
    sent = [r for r in records if r.error != "dropped"]
    return sum(r.tries for r in sent) / len(sent) if sent else None


def judged(records: list[LoadRecord], on: Judged) -> list[LoadRecord]:
    """What SLOs and expectations judge, the one definition. A request its client cancelled
    is the client's choice, not the service's outcome: judged never. ``requests``: each
    logical request once, as its user saw it (its last attempt's outcome, its latency from
    the scheduled send). ``attempts``: every attempt, as the service saw it: one record each,
    timed from its own send, in the order they left."""
    kept = [r for r in records if not r.cancelled]
    if on == "requests":
        return kept
    out: list[LoadRecord] = []
    for r in records:
        for a in r.attempts:
            out.append(LoadRecord(r.index, a.sent, sent=a.sent, end=a.end, status=a.status,
                                  error=a.error, client=r.client))  # fmt: skip
        if not r.cancelled:
            last = r.sent if r.last_sent is None else r.last_sent
            start = r.scheduled if not r.attempts else last
            out.append(dataclasses.replace(r, scheduled=start, attempts=[]))
    return sorted(out, key=lambda r: r.scheduled)


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0.0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While the load runs, the objects the process held before it are out of the garbage
    collector's reach (``gc.freeze``).

    A full collection stops every thread of the process for as long as it takes to scan the
    heap: 0.16 s for the 270,000 objects of torch, transformers and the harness imported, and
    more in a pytest process that has run hundreds of tests (a CI run saw a schedule lag p99 of
    396 ms at 13 % CPU). Frozen, the objects made before the load are not scanned again, so a
    collection during the load costs what the load itself allocated. Garbage is collected
    first so that it is not frozen with the rest; nesting (a burst inside a run) is harmless.
    """
    outermost = gc.get_freeze_count() == 0
    if outermost:
        gc.collect()
        gc.freeze()
    try:
        yield
    finally:
        if outermost:
            gc.unfreeze()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``main`` on an event loop of its own: uvloop's where it is installed (the
    ``distributed`` extra brings it), whose lower cost per callback is schedule kept at high
    rates, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


class _WalkedAway(Exception):
    """A client's cancel rule fired: it closed its request (raised inside the attempt)."""


@contextlib.contextmanager
def _walks_away(after: float) -> Iterator[None]:
    """Cancel the attempt in progress ``after`` seconds from now; the cancellation surfaces as
    :class:`_WalkedAway`, so that the request's own timeout stays a timeout."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def fire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(after, fire)
    try:
        yield
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise _WalkedAway from None
        raise
    finally:
        handle.cancel()


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: a number of seconds or an HTTP date (None: absent
    or unreadable)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _lines(block: bytes, record: LoadRecord) -> list[str]:
    """The lines of ``block`` (whole lines, ``\r\n`` or ``\n``), decoded strictly: a byte
    that is not UTF-8 is a damaged answer, not one to repair; its line is dropped and the
    request's error is ``stream``. (A character is never split across two lines.)"""
    try:
        return [line.rstrip("\r") for line in block.decode("utf-8").split("\n")]
    except UnicodeDecodeError:
        pass
    lines = []
    for raw in block.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            record.error = record.error or "stream"
    return lines


def _classify(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientSSLError):  # a certificate refused, before "connect"
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError
    ):
        return "reset"
    return "transport"


# The most a stream read takes at once: everything that has arrived, up to this (aiohttp
# would otherwise hand over each HTTP chunk, usually one event, on its own).
_READ_BYTES = 1 << 16

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
        indices: Sequence[int] | None = None,
        headers: dict[str, str] | None = None,
        rules: AnswerRules | None = None,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``origin``: the monotonic instant that ``schedule`` counts from (default: when
        :meth:`run` starts), so a second generator can share a run's time axis.
        ``first_index``: the first request's index (a second generator's come after);
        ``indices``: each request's own index instead (a shard's: every N-th of the run's).
        ``headers``: sent with every request (an API key, a tenant). ``rules``: how an answer
        says it is degraded. ``server_hostname``: the name TLS verifies the certificate
        against when ``url`` is an https proxy address in front of the real host;
        ``ssl_context``: what it verifies with (default: the system's CAs)."""
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
        self.indices = indices
        if indices is not None and len(indices) != len(schedule):
            raise ValueError(f"{len(indices)} indices for {len(schedule)} scheduled requests")
        self.headers = dict(headers or {})
        self.rules = rules or AnswerRules()
        self.server_hostname = server_hostname
        self.ssl_context = ssl_context
        self._pending: dict[int, LoadRecord] = {}  # sent, not yet answered
        self.start_timeout_s = 30.0  # how long a runner waits for ``started``
        # Set when the first request is due: t = 0 of the run, on both clocks, so a runner can
        # schedule faults on the same time axis as the requests.
        self.started = threading.Event()
        self.start_monotonic = math.nan
        self.start_wall = math.nan

    async def run(self, stop: asyncio.Event | None = None) -> LoadResult:
        # Every instant is read from time.monotonic(), never loop.time(): uvloop's is the
        # loop's cached time in whole milliseconds, too coarse for token gaps and lag.
        clock = time.monotonic
        connector = aiohttp.TCPConnector(
            limit=self.max_in_flight, keepalive_timeout=_KEEPALIVE_S, ttl_dns_cache=None
        )
        records: list[LoadRecord] = []
        in_flight: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=None)  # each request has its own, below
        async with aiohttp.ClientSession(
            self.url, connector=connector, timeout=timeout, auto_decompress=False
        ) as client:
            start = clock() if self.origin is None else self.origin
            started_wall = time.time() - (clock() - start)
            self.start_monotonic, self.start_wall = start, started_wall
            self.started.set()
            began, cpu_start = clock(), time.process_time()
            for index, offset in enumerate(self.schedule):
                if stop is not None and stop.is_set():
                    break
                # Never early: uvloop's timers count whole milliseconds from the loop's cached
                # time and may fire before the due instant; what is left is waited out again,
                # a millisecond at least (a shorter wait would return at once, a busy loop;
                # asyncio's own epoll waits whole milliseconds too).
                while (delay := start + offset - clock()) > 0:  # noqa: ASYNC110 - a deadline
                    await asyncio.sleep(max(delay, 0.001))
                number = self.first_index + index if self.indices is None else self.indices[index]
                record = LoadRecord(number, offset, sent=clock() - start)
                records.append(record)
                if len(in_flight) >= self.max_in_flight:
                    # Never sent, yet a request of the schedule: a record like any other (and
                    # a bad one), so that SLOs and expectations count it.
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
            wall = max(clock() - began, 1e-9)
            cpu_share = (time.process_time() - cpu_start) / wall
        return LoadResult(records, self._health(records, cpu_share), started_wall)

    def _health(self, records: list[LoadRecord], cpu: float) -> GeneratorHealth:
        figures = LagFigures.of(records, self.late_after_s)
        reasons = []
        if figures.dropped:
            reasons.append(f"{figures.dropped} requests dropped at the in-flight limit")
        if figures.p99 > self.max_lag_p99_s:
            reasons.append(
                f"schedule lag p99 {figures.p99 * 1000:.1f} ms > {self.max_lag_p99_s * 1000:g}"
            )
        if cpu > self.max_cpu_share:
            reasons.append(f"generator CPU {cpu:.0%} of a core > {self.max_cpu_share:.0%}")
        return figures.health(scheduled=len(self.schedule), cpu_share=cpu, reasons=reasons)

    async def _send(self, client: aiohttp.ClientSession, record: LoadRecord, start: float) -> None:
        def now() -> float:
            return time.monotonic() - start

        try:
            spec = self.request(record.index)
            record.client = spec.client
            jitter: random.Random | None = None  # made at the first retry: most never retry
            # The timeout is the user's: the whole request, its retries and waits included.
            async with asyncio.timeout(self.timeout_s):
                while True:
                    retry_after = await self._attempt(client, spec, record, now)
                    policy = spec.retry
                    if (
                        policy is None or record.cancelled or record.tries >= policy.max_attempts
                        or not policy.retries(record.status, record.error)
                    ):  # fmt: skip
                        break
                    record.end = now()
                    jitter = jitter or random.Random(spec.seed)
                    wait = policy.backoff.wait(record.tries, jitter.random())
                    if policy.retry_after and retry_after is not None:
                        wait = max(wait, retry_after)
                    # Waited out before the attempt is counted: a timeout during the wait
                    # leaves the last attempt sent as the last, not one that never left.
                    await asyncio.sleep(wait)
                    record.retried()
                    record.last_sent = now()
        except (TimeoutError, aiohttp.ClientError) as exc:
            record.error = _classify(exc)
        except Exception as exc:  # one request's surprise is its error, not the generator's end
            record.error = f"client: {type(exc).__name__}: {exc}"[:200]
        record.end = now()
        self._pending.pop(record.index, None)
        if self.on_record is not None:
            self.on_record(record)

    async def _attempt(
        self,
        client: aiohttp.ClientSession,
        spec: RequestSpec,
        record: LoadRecord,
        now: Callable[[], float],
    ) -> float | None:
        """One attempt into ``record``; a failure is its error. Returns the seconds the
        answer's ``Retry-After`` asked for (None: none)."""
        retry_after: float | None = None
        walk_away: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if spec.cancel is not None and spec.cancel.after is not None:
            sent = record.sent if record.last_sent is None else record.last_sent
            walk_away = _walks_away(max(spec.cancel.after - (now() - sent), 0.0))
        try:
            with walk_away:
                if spec.stream:
                    retry_after = await self._stream(client, spec, record, now)
                else:
                    async with self._post(client, spec, spec.body) as response:
                        record.first_byte = now()
                        record.status = response.status
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                        read_answer(spec.api, record, parse_json(await response.read()))
                        self._degraded(record, response)
        except _WalkedAway:
            record.cancelled = True
        except (aiohttp.ClientError, aiohttp.ServerTimeoutError) as exc:
            record.error = _classify(exc)
        return retry_after

    def pending(self) -> list[LoadRecord]:
        """The requests sent and not answered yet (safe to call from another thread)."""
        return list(self._pending.copy().values())

    async def _stream(
        self,
        client: aiohttp.ClientSession,
        spec: RequestSpec,
        record: LoadRecord,
        now: Callable[[], float],
    ) -> float | None:
        body = {**spec.body, "stream": True}
        after_tokens = None if spec.cancel is None else spec.cancel.after_tokens
        async with self._post(client, spec, body) as response:
            record.first_byte = now()
            record.status = response.status
            if response.status != 200:
                read_answer(spec.api, record, parse_json(await response.read()))
                return _retry_after(response.headers.get("Retry-After"))
            stream = StreamReader(spec.api, record, now)
            rest = b""
            # Read as it comes, not line by line: one await and one decode for every line
            # that arrived together (they are timed together: that is when they arrived).
            async for data in response.content.iter_chunked(_READ_BYTES):
                block = rest + data if rest else data
                cut = block.rfind(b"\n")
                if cut < 0:
                    rest = block
                    continue
                rest = block[cut + 1 :]
                for line in _lines(block[:cut], record):
                    if after_tokens is not None and stream.counted >= after_tokens:
                        # The user has read enough: the connection is closed mid-stream, as
                        # a browser tab or an SDK's cancel closes it.
                        record.cancelled, record.tokens = True, stream.counted
                        response.close()
                        return None
                    stream.line(line)
            for line in _lines(rest, record) if rest else ():
                stream.line(line)
            stream.close()
            self._degraded(record, response)
        return None

    def _post(self, client: aiohttp.ClientSession, spec: RequestSpec, body: dict[str, Any]) -> Any:
        extra: dict[str, Any] = {}
        if self.server_hostname is not None:
            extra["server_hostname"] = self.server_hostname
        if self.ssl_context is not None:
            extra["ssl"] = self.ssl_context
        return client.post(spec.path, json=body, headers=self.headers or None, **extra)

    def _degraded(self, record: LoadRecord, response: aiohttp.ClientResponse) -> None:
        if record.error is None and self.rules.degraded_by(response.headers, record.model):
            record.degraded = True
