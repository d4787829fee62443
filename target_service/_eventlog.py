"""The gateway's event log: state changes in order, with wall and monotonic timestamps.

Bounded, so a long soak cannot grow it without limit; readers page with ``since`` (a sequence
number), so a poller never misses or repeats an event while the log is within its bound.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    REPLICA_DOWN = "replica_down"
    REPLICA_UP = "replica_up"
    BREAKER_OPEN = "breaker_open"
    BREAKER_HALF_OPEN = "breaker_half_open"
    BREAKER_CLOSED = "breaker_closed"
    FALLBACK_ON = "fallback_on"
    FALLBACK_OFF = "fallback_off"
    CANARY_WEIGHT = "canary_weight"
    CANARY_ROLLBACK = "canary_rollback"
    CANARY_PROMOTED = "canary_promoted"
    MODEL_LOAD_REFUSED = "model_load_refused"
    WORKER_STARTED = "worker_started"
    WORKER_EXITED = "worker_exited"
    WORKER_RESTARTED = "worker_restarted"
    REPLICA_RELOAD = "replica_reload"
    SHED = "shed"


@dataclass(frozen=True)
class Event:
    seq: int
    kind: EventKind
    wall: float
    monotonic: float
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "wall": self.wall,
            "monotonic": self.monotonic,
            **self.details,
        }


class EventLog:
    def __init__(self, capacity: int = 10_000) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()

    def record(self, kind: EventKind, **details: Any) -> Event:
        with self._lock:
            self._seq += 1
            event = Event(self._seq, kind, time.time(), time.monotonic(), details)
            self._events.append(event)
        return event

    def since(self, seq: int = 0) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > seq]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq
