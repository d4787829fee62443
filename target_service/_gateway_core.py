"""Routing inside the gateway: pools of replicas, health, breakers, deadlines, retry, fallback.

One request's path: the canary for its weighted, sticky share; else a primary replica (fewest in
flight among the ready ones with a closed or half-open breaker) within the deadline, one retry on
another primary replica after a connection failure; when primary errs, times out or has no
replica to offer, the fallback pool serves it, marked degraded. A pool at its in-flight limit
sheds the request (429) instead of queueing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from ._breaker import BreakerState, CircuitBreaker
from ._eventlog import EventKind, EventLog
from ._registry import ModelRef
from ._stack_config import GatewayConfig, PoolName, StackConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSpec:
    pool: PoolName
    index: int
    model: str
    url: str


class Replica:
    def __init__(self, spec: ReplicaSpec, config: GatewayConfig, events: EventLog) -> None:
        self.spec = spec
        self.ref = ModelRef.parse(spec.model, require_version=True)
        self.ready = False
        self.reason = "not checked yet"
        self.in_flight = 0
        self.events = events

        def on_change(old: BreakerState, new: BreakerState) -> None:
            kind = {
                BreakerState.OPEN: EventKind.BREAKER_OPEN,
                BreakerState.HALF_OPEN: EventKind.BREAKER_HALF_OPEN,
                BreakerState.CLOSED: EventKind.BREAKER_CLOSED,
            }[new]
            events.record(kind, **self.ident, previous=old.value)

        self.breaker = CircuitBreaker(
            failure_threshold=config.breaker.failures,
            cooldown_s=config.breaker.cooldown,
            on_change=on_change,
        )

    @property
    def ident(self) -> dict[str, Any]:
        return {"pool": self.spec.pool.value, "index": self.spec.index, "model": self.spec.model}

    def set_ready(self, ready: bool, reason: str = "") -> None:
        refused = not ready and "model load refused" in reason
        # A replica already down (e.g. "reloading") whose load is then refused is news too.
        newly_refused = refused and "model load refused" not in self.reason
        if ready == self.ready:
            self.reason = reason
        else:
            self.ready, self.reason = ready, reason
            if ready:
                self.events.record(EventKind.REPLICA_UP, **self.ident)
                return
            self.events.record(EventKind.REPLICA_DOWN, **self.ident, reason=reason)
        if newly_refused:
            self.events.record(EventKind.MODEL_LOAD_REFUSED, **self.ident, reason=reason)

    def state(self) -> dict[str, Any]:
        return {
            **self.ident,
            "url": self.spec.url,
            "ready": self.ready,
            "reason": self.reason,
            "breaker": self.breaker.state.value,
            "in_flight": self.in_flight,
        }


class Pool:
    def __init__(self, name: PoolName, replicas: list[Replica], max_in_flight: int) -> None:
        self.name = name
        self.replicas = replicas
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._turn = itertools.count()

    def available(self) -> list[Replica]:
        return [r for r in self.replicas if r.ready and r.breaker.available()]

    def pick(self, exclude: set[int]) -> Replica | None:
        """The ready replica with the fewest requests in flight; ties taken in turn."""
        candidates = [r for r in self.available() if r.spec.index not in exclude]
        if not candidates:
            return None
        turn = next(self._turn)
        size = len(self.replicas)
        return min(candidates, key=lambda r: (r.in_flight, (r.spec.index - turn) % size))

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight


class AttemptKind(StrEnum):
    OK = "ok"
    CLIENT_ERROR = "client_error"  # the worker said the request is bad: pass it on as is
    CONNECT = "connect"  # never reached the replica: safe to retry elsewhere
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"  # the pool had no replica to offer


@dataclass
class Attempt:
    kind: AttemptKind
    replica: Replica
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str = ""
    # For streams: the open upstream response and the events read before committing to it.
    stream: httpx.Response | None = None
    head: list[bytes] = field(default_factory=list)


class Shed(Exception):
    """A pool is at its in-flight limit."""

    def __init__(self, pool: PoolName) -> None:
        super().__init__(f"the {pool.value} pool is at its in-flight limit")
        self.pool = pool


class Unavailable(Exception):
    """Neither primary nor fallback could answer."""


@dataclass
class Served:
    attempt: Attempt
    pool: PoolName
    degraded: bool
    started: float


class Gateway:
    """Routing state shared by every request; lives on the gateway's event loop."""

    def __init__(
        self,
        config: StackConfig,
        replicas: list[ReplicaSpec],
        *,
        events: EventLog,
        client: httpx.AsyncClient,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.gw = config.gateway
        self.events = events
        self.client = client
        self.rng = random.Random(seed)
        self.canary_weight = config.pools.canary.weight if config.pools.canary.replicas else 0.0
        self.fallback_active = False
        # Observers of every canary and primary attempt (the canary controller is one).
        self.outcome_hooks: list[Callable[[PoolName, AttemptKind, int | None, float], None]] = []
        limits = {name: pool.max_in_flight for name, pool in config.pools.items()}
        self.pools = {
            name: Pool(
                name,
                [Replica(s, self.gw, events) for s in replicas if s.pool is name],
                limits[name],
            )
            for name in PoolName
        }

    # canary assignment ---------------------------------------------------------------------
    def wants_canary(self, user: str | None) -> bool:
        if self.canary_weight <= 0 or not self.pools[PoolName.CANARY].replicas:
            return False
        if user is None:
            return self.rng.random() * 100 < self.canary_weight
        # Sticky: a user's bucket never changes, so the same users stay on the canary.
        bucket = int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % 10_000
        return bucket < self.canary_weight * 100

    def set_canary_weight(self, weight: float, *, reason: str, **details: Any) -> None:
        old, self.canary_weight = self.canary_weight, weight
        kind = EventKind.CANARY_WEIGHT
        if weight == 0 and reason == "rollback":
            kind = EventKind.CANARY_ROLLBACK
        elif weight == 100 and reason == "promote":
            kind = EventKind.CANARY_PROMOTED
        self.events.record(kind, previous=old, weight=weight, reason=reason, **details)

    # one attempt ---------------------------------------------------------------------------
    async def attempt(
        self, replica: Replica, body: dict[str, Any], budget_s: float, *, stream: bool
    ) -> Attempt:
        self._hold(replica, +1)
        result: Attempt | None = None
        try:
            async with asyncio.timeout(max(budget_s, 0.001)):
                if stream:
                    result = await self._open_stream(replica, body)
                else:
                    response = await self.client.post(f"{replica.spec.url}/v1/generate", json=body)
                    result = self._judge(replica, response.status_code, _json(response))
            return result
        except TimeoutError:
            return Attempt(AttemptKind.TIMEOUT, replica, error=f"no answer within {budget_s:.3f}s")
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            replica.set_ready(False, f"connection failed: {exc}")
            return Attempt(AttemptKind.CONNECT, replica, error=f"connection failed: {exc}")
        except httpx.HTTPError as exc:
            return Attempt(AttemptKind.SERVER_ERROR, replica, error=f"{type(exc).__name__}: {exc}")
        finally:
            # An open stream stays in flight until ``relay`` has passed it all on.
            if result is None or result.stream is None:
                self._hold(replica, -1)

    def _hold(self, replica: Replica, delta: int) -> None:
        replica.in_flight += delta
        self.pools[replica.spec.pool].in_flight += delta

    async def relay(self, attempt: Attempt) -> AsyncIterator[str]:
        """The rest of an upstream SSE stream, line by line; closes and releases it at the end."""
        assert attempt.stream is not None and attempt.body is not None
        lines: AsyncIterator[str] = attempt.body["lines"]
        try:
            async for line in lines:
                yield line
        finally:
            await attempt.stream.aclose()
            self._hold(attempt.replica, -1)

    async def _open_stream(self, replica: Replica, body: dict[str, Any]) -> Attempt:
        request = self.client.build_request(
            "POST", f"{replica.spec.url}/v1/generate", json={**body, "stream": True}
        )
        response = await self.client.send(request, stream=True)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            return self._judge(replica, response.status_code, _json(response))
        # Commit to this replica only once its first event is here: until then the deadline
        # still applies and a failure can still go to another pool.
        head: list[bytes] = []
        lines = response.aiter_lines()
        try:
            async for line in lines:
                head.append(line.encode())
                if line == "" and any(h.startswith(b"data:") for h in head):
                    break
        except BaseException:
            await response.aclose()
            raise
        if not head or b"event: error" in head:
            await response.aclose()
            return Attempt(AttemptKind.SERVER_ERROR, replica, error="stream failed at its start")
        attempt = Attempt(AttemptKind.OK, replica, status=200, stream=response, head=head)
        attempt.body = {"lines": lines}
        return attempt

    def _judge(self, replica: Replica, status: int, body: dict[str, Any] | None) -> Attempt:
        if status == 200:
            return Attempt(AttemptKind.OK, replica, status=status, body=body)
        error = str((body or {}).get("error", {}).get("message", f"HTTP {status}"))
        if 400 <= status < 500:
            return Attempt(AttemptKind.CLIENT_ERROR, replica, status=status, body=body, error=error)
        if status == 503:
            replica.set_ready(False, error)
        return Attempt(AttemptKind.SERVER_ERROR, replica, status=status, body=body, error=error)

    def _settle(self, attempt: Attempt) -> None:
        """Feed one attempt's outcome to its replica's breaker."""
        if attempt.kind in (AttemptKind.OK, AttemptKind.CLIENT_ERROR):
            attempt.replica.breaker.success()
        else:
            attempt.replica.breaker.failure()

    # a whole request -----------------------------------------------------------------------
    async def serve(self, body: dict[str, Any], user: str | None, *, stream: bool) -> Served:
        started = time.monotonic()
        if self.wants_canary(user):
            canary = self.pools[PoolName.CANARY]
            replica = canary.pick(set())
            if replica is not None and not canary.full and replica.breaker.acquire():
                attempt = await self.attempt(replica, body, self.gw.deadline, stream=stream)
                self._settle(attempt)
                self.on_outcome(PoolName.CANARY, attempt.kind, attempt.status, started)
                if attempt.kind in (AttemptKind.OK, AttemptKind.CLIENT_ERROR):
                    return Served(attempt, PoolName.CANARY, False, started)
            else:
                # Down, broken open or full: the canary failed this request as surely as an
                # error would have, and the controller must see it, or an open breaker would
                # hide a bad canary for good.
                self.on_outcome(PoolName.CANARY, AttemptKind.UNAVAILABLE, None, started)
            # A failing canary must not cost the user the answer: primary takes it.

        primary = self.pools[PoolName.PRIMARY]
        deadline_at = time.monotonic() + self.gw.deadline
        tried: set[int] = set()
        retries_left = self.gw.retries
        while time.monotonic() < deadline_at:
            replica = primary.pick(tried)
            if replica is None:
                break
            if primary.full:
                raise Shed(PoolName.PRIMARY)
            if not replica.breaker.acquire():
                tried.add(replica.spec.index)
                continue
            attempt = await self.attempt(
                replica, body, deadline_at - time.monotonic(), stream=stream
            )
            self._settle(attempt)
            self.on_outcome(PoolName.PRIMARY, attempt.kind, attempt.status, started)
            if attempt.kind in (AttemptKind.OK, AttemptKind.CLIENT_ERROR):
                if attempt.kind is AttemptKind.OK and self.fallback_active:
                    self.fallback_active = False
                    self.events.record(EventKind.FALLBACK_OFF, served_by=replica.ident)
                return Served(attempt, PoolName.PRIMARY, False, started)
            tried.add(replica.spec.index)
            if attempt.kind is AttemptKind.CONNECT and retries_left > 0:
                retries_left -= 1
                continue
            break
        return await self._fallback(body, stream=stream, started=started)

    async def _fallback(self, body: dict[str, Any], *, stream: bool, started: float) -> Served:
        fallback = self.pools[PoolName.FALLBACK]
        tried: set[int] = set()
        while True:
            replica = fallback.pick(tried)
            if replica is None:
                raise Unavailable("no primary replica answered and no fallback replica is ready")
            if fallback.full:
                raise Shed(PoolName.FALLBACK)
            tried.add(replica.spec.index)
            if not replica.breaker.acquire():
                continue
            attempt = await self.attempt(replica, body, self.gw.fallback_deadline, stream=stream)
            self._settle(attempt)
            if attempt.kind in (AttemptKind.OK, AttemptKind.CLIENT_ERROR):
                if attempt.kind is AttemptKind.OK and not self.fallback_active:
                    self.fallback_active = True
                    self.events.record(EventKind.FALLBACK_ON, served_by=replica.ident)
                return Served(attempt, PoolName.FALLBACK, True, started)
            if attempt.kind is not AttemptKind.CONNECT:
                raise Unavailable(f"fallback failed too: {attempt.error}")

    def on_outcome(
        self, pool: PoolName, kind: AttemptKind, status: int | None, started: float
    ) -> None:
        latency = time.monotonic() - started
        for hook in self.outcome_hooks:
            hook(pool, kind, status, latency)

    # health --------------------------------------------------------------------------------
    async def check_health(self) -> None:
        replicas = [r for pool in self.pools.values() for r in pool.replicas]
        await asyncio.gather(*(self._check(r) for r in replicas))

    async def _check(self, replica: Replica) -> None:
        url = f"{replica.spec.url}/readyz"
        try:
            try:
                response = await self.client.get(url, timeout=self.gw.health_timeout)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A pooled keep-alive connection the worker closed as we reused it: not a
                # verdict on the worker. One fresh attempt decides.
                response = await self.client.get(url, timeout=self.gw.health_timeout)
        except httpx.HTTPError as exc:
            replica.set_ready(False, f"health check failed: {type(exc).__name__}: {exc}")
            return
        if response.status_code == 200:
            replica.set_ready(True)
        else:
            reason = str(
                (_json(response) or {}).get("reason", f"/readyz said {response.status_code}")
            )
            replica.set_ready(False, reason)

    async def health_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.check_health()
            except Exception:  # a bug here must not stop health checking for good
                log.exception("health check round failed")
            await asyncio.sleep(max(0.0, self.gw.health_interval - (time.monotonic() - started)))

    def state(self) -> dict[str, Any]:
        return {
            "canary_weight": self.canary_weight,
            "fallback_active": self.fallback_active,
            "pools": {
                name.value: {
                    "in_flight": pool.in_flight,
                    "max_in_flight": pool.max_in_flight,
                    "replicas": [r.state() for r in pool.replicas],
                }
                for name, pool in self.pools.items()
            },
        }

    @property
    def ready(self) -> bool:
        return bool(
            self.pools[PoolName.PRIMARY].available() or self.pools[PoolName.FALLBACK].available()
        )


def _json(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
