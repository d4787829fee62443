"""The controller of a sharded load: it deals the run's one schedule over the shards, starts
them at one instant on its own clock, takes their records back in batches while the run goes
(so probes, aborts and the live progress see every shard), and merges their health. The run's
faults, probes and aborts stay with the runner, in this process: the shards only send."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from chaos._errors import ShardError
from chaos._loadgen import (
    GeneratorHealth,
    LagFigures,
    LoadRecord,
    LoadResult,
    RequestSpec,
    ShardHealth,
)
from chaos._version import __version__

from ._protocol import (
    Batch,
    ClockSample,
    GeneratorSettings,
    ShardHello,
    ShardWork,
    clock_offset,
    deal,
)


class ShardEngine(Protocol):
    """What starts and reaches the shards (Ray actors: :class:`RayEngine`). Every call blocks
    until done or until its timeout."""

    @property
    def where(self) -> str: ...

    def open(self, shards: int) -> None: ...

    def hellos(self, timeout: float) -> list[ShardHello]: ...

    def clock(self, shard: int, timeout: float) -> float: ...

    def start(self, works: list[ShardWork], timeout: float) -> None: ...

    def take(self, shards: list[int], timeout: float) -> dict[int, Batch | str]: ...

    def stop(self, shards: list[int]) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Shard:
    hello: ShardHello
    offset: float
    rtt: float
    scheduled: int
    records: list[LoadRecord]
    health: GeneratorHealth | None = None
    lost: str | None = None  # why its records stopped coming (its actor died, it went silent)
    error: str | None = None  # why its generator failed

    @property
    def done(self) -> bool:
        return self.health is not None or self.lost is not None or self.error is not None


_CLOCK_SAMPLES = 5


class ShardedLoad:
    """One run's load sent by ``shards`` shards through ``engine``: to the runner it is a
    load generator like :class:`~chaos._loadgen.LoadGenerator` (``started``,
    ``start_monotonic``/``start_wall``, :meth:`pending`, :meth:`run`)."""

    def __init__(
        self,
        url: str,
        schedule: list[float],
        request: Callable[[int], RequestSpec],
        *,
        shards: int,
        engine: ShardEngine,
        settings: GeneratorSettings,
        on_record: Callable[[LoadRecord], None] | None = None,
        late_after_s: float = 0.005,
        poll_s: float = 0.1,
        lost_after_s: float = 10.0,
        start_timeout_s: float = 180.0,
    ) -> None:
        """``poll_s``: how often every shard is asked for its finished records (an abort
        reaches every shard within one); ``lost_after_s``: a shard silent that long is lost;
        ``start_timeout_s``: for the cluster to be joined (or started) and every shard up."""
        self.url = url
        self.schedule = schedule
        self.request = request
        self.shards = shards
        self.engine = engine
        self.settings = settings
        self.on_record = on_record
        self.late_after_s = late_after_s
        self.poll_s = poll_s
        self.lost_after_s = lost_after_s
        self.start_timeout_s = start_timeout_s
        self.started = threading.Event()
        self.start_monotonic = math.nan
        self.start_wall = math.nan
        self._pending: dict[int, list[LoadRecord]] = {}

    def pending(self) -> list[LoadRecord]:
        """The requests the shards had in flight at their last batch (from any thread)."""
        return [r for batch in list(self._pending.values()) for r in batch]

    async def run(self, stop: asyncio.Event | None = None) -> LoadResult:
        engine = self.engine
        try:
            engine.open(self.shards)
            dealt = deal(len(self.schedule), self.shards)
            shards = self._meet(engine, dealt)
            if stop is not None and stop.is_set():
                return self._result(shards)
            self._start(engine, shards, dealt)
            await self._follow(engine, shards, stop)
            return self._result(shards)
        finally:
            self._pending.clear()
            engine.close()

    def _meet(self, engine: ShardEngine, dealt: list[list[int]]) -> list[_Shard]:
        """Every shard up, of this ichaos's version, its clock offset measured."""
        hellos = engine.hellos(self.start_timeout_s)
        other = [h for h in hellos if h.version != __version__]
        if other:
            raise ShardError(
                f"load shards on {engine.where} run inference-chaos {other[0].version} "
                f"(on {other[0].host}), this controller {__version__}: install the same one "
                "on every node"
            )
        out = []
        for index, hello in enumerate(hellos):
            samples = []
            for _ in range(_CLOCK_SAMPLES):
                sent = time.time()
                remote = engine.clock(index, timeout=self.lost_after_s)
                samples.append(ClockSample(sent, remote, time.time()))
            offset, rtt = clock_offset(samples)
            out.append(_Shard(hello, offset, rtt, scheduled=len(dealt[index]), records=[]))
        return out

    def _start(self, engine: ShardEngine, shards: list[_Shard], dealt: list[list[int]]) -> None:
        works = [
            ShardWork(
                shard=i,
                url=self.url,
                indices=indices,
                offsets=[self.schedule[k] for k in indices],
                specs=[self.request(k) for k in indices],
                settings=self.settings,
                start_wall=0.0,
                clock_offset=shards[i].offset,
            )
            for i, indices in enumerate(dealt)
        ]
        # t = 0 is set once the work is made (the bodies can take a while for a long run), far
        # enough ahead for it to reach every shard: each then waits for the same instant.
        lead = max(1.0, 10 * max(s.rtt for s in shards))
        start_wall = time.time() + lead
        engine.start([replace(w, start_wall=start_wall) for w in works], self.start_timeout_s)
        self.start_wall = start_wall
        self.start_monotonic = time.monotonic() + (start_wall - time.time())
        self.started.set()

    async def _follow(
        self, engine: ShardEngine, shards: list[_Shard], stop: asyncio.Event | None
    ) -> None:
        stopping = False
        while live := [i for i, s in enumerate(shards) if not s.done]:
            if stop is not None and stop.is_set() and not stopping:
                engine.stop(live)
                stopping = True
            for index, got in engine.take(live, self.lost_after_s).items():
                shard = shards[index]
                if isinstance(got, str):
                    shard.lost = got
                    self._pending.pop(index, None)
                    continue
                for record in got.records:
                    shard.records.append(record)
                    if self.on_record is not None:
                        self.on_record(record)
                self._pending[index] = got.pending
                if got.done:
                    self._pending.pop(index, None)
                    shard.health = got.health
                    shard.error = got.error or (None if got.health else "ended without health")
            await asyncio.sleep(self.poll_s)  # lets a stop asked meanwhile be seen

    def _result(self, shards: list[_Shard]) -> LoadResult:
        records = sorted((r for s in shards for r in s.records), key=lambda r: r.index)
        healths = tuple(self._shard_health(i, s) for i, s in enumerate(shards))
        reasons = [f"shard {h.shard} ({h.host}): {reason}" for h in healths for reason in h.reasons]
        cpu = max((h.cpu_share for h in healths), default=0.0)
        health = LagFigures.of(records, self.late_after_s).health(
            scheduled=len(self.schedule), cpu_share=cpu, reasons=reasons, shards=healths
        )
        return LoadResult(records, health, self.start_wall)

    def _shard_health(self, index: int, shard: _Shard) -> ShardHealth:
        own = shard.health
        reasons = list(own.reasons) if own is not None else []
        if shard.lost is not None:
            missing = shard.scheduled - len(shard.records)
            reasons.append(
                f"lost ({shard.lost}) on node {shard.hello.node[:12]}: "
                f"{missing} of its {shard.scheduled} requests unaccounted for"
            )
        if shard.error is not None:
            reasons.append(f"its generator failed: {shard.error}")
        figures = LagFigures.of(shard.records, self.late_after_s)
        return ShardHealth(
            shard=index, node=shard.hello.node, host=shard.hello.host,
            clock_offset_ms=shard.offset * 1000, clock_rtt_ms=shard.rtt * 1000,
            scheduled=shard.scheduled, started=figures.started,
            lag_p99_ms=figures.p99 * 1000, cpu_share=0.0 if own is None else own.cpu_share,
            lost=shard.lost is not None, reasons=tuple(reasons),
        )  # fmt: skip
