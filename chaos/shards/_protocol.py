"""The shard protocol, the same whatever starts the shards (Ray actors here; a Kubernetes
Indexed Job could start them too): the controller deals the one schedule, tells each shard
what to send and when t = 0 is, and takes back batches of finished records until each says it
is done. Everything here is plain data: it crosses a process (or machine) boundary pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaos._loadgen import GeneratorHealth, LoadRecord, RequestSpec
from chaos._protocols import AnswerRules


def deal(count: int, shards: int) -> list[list[int]]:
    """Arrival k of a schedule of ``count`` goes to shard k mod ``shards``: N shards send
    exactly the requests one process would, each at its own scheduled time, and a seeded run
    deals the same way every time."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return [list(range(shard, count, shards)) for shard in range(shards)]


@dataclass(frozen=True)
class ClockSample:
    """One round trip to a shard: the controller's wall clock when it asked (``sent``) and
    when the answer came (``received``), and the shard's wall clock in between (``remote``)."""

    sent: float
    remote: float
    received: float

    @property
    def rtt(self) -> float:
        return self.received - self.sent


def clock_offset(samples: list[ClockSample]) -> tuple[float, float]:
    """The shard's clock minus the controller's, and the round trip it was measured over:
    from the sample with the shortest round trip, taking the shard's reading as made halfway
    (the error is at most half that round trip)."""
    if not samples:
        raise ValueError("no clock samples")
    best = min(samples, key=lambda s: s.rtt)
    return best.remote - (best.sent + best.received) / 2, best.rtt


@dataclass(frozen=True)
class GeneratorSettings:
    """What every request of every shard carries, and the validity limits each shard's
    generator judges itself by. ``ca_pem``: the certificates an https service is verified
    with (a file's path would not exist on another machine)."""

    timeout_s: float
    max_lag_p99_s: float
    max_cpu_share: float
    headers: dict[str, str]
    rules: AnswerRules
    server_hostname: str | None = None
    ca_pem: str | None = None
    max_in_flight: int = 1000


@dataclass(frozen=True)
class ShardWork:
    """What one shard sends: its requests (their run-wide indices, scheduled offsets from
    t = 0, and bodies), where, and when t = 0 is on the controller's wall clock together with
    this shard's clock offset to it, so that the shard starts at the same instant as the rest
    and its records are on the controller's time axis."""

    shard: int
    url: str
    indices: list[int]
    offsets: list[float]
    specs: list[RequestSpec]
    settings: GeneratorSettings
    start_wall: float
    clock_offset: float


@dataclass(frozen=True)
class Batch:
    """What a shard gives back at each poll: the records finished since the last batch, the
    requests it has in flight now, and at the end its own health (or why it failed)."""

    shard: int
    records: list[LoadRecord]
    pending: list[LoadRecord]
    done: bool = False
    health: GeneratorHealth | None = None
    error: str | None = None


@dataclass(frozen=True)
class ShardHello:
    """A shard's answer when it is up: where it runs and which ichaos it runs."""

    node: str
    host: str
    pid: int
    version: str
