"""What a run says while it happens. The runner only emits events; the journal, the progress
display and anything else a user plugs in are observers subscribed to them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    RUN_STARTED = "run_started"  # scenario, settings, environment
    REPAIR = "repair"  # one thing an earlier, killed run left behind, undone before this one
    TARGET_READY = "target_ready"  # the backend is provisioned
    PROBE = "probe"  # one steady-state probe result
    LOAD_STARTED = "load_started"  # t = 0 of the run
    FAULT_APPLIED = "fault_applied"
    FAULT_REVERTED = "fault_reverted"
    FAULT_FAILED = "fault_failed"  # an apply or a revert failed
    BURST = "burst"  # an extra burst of traffic started or ended
    REQUEST = "request"  # one finished request (a load record)
    METRICS = "metrics"  # one scrape of the service's own metrics: each series' value
    SERVICE_EVENT = "service_event"  # from the gateway / supervisor: restarts, breaker, rollback
    ABORT = "abort"  # an abort condition held: the experiment stops early
    LOAD_FINISHED = "load_finished"  # with the generator's health
    VERDICT = "verdict"  # the verdict, as written to verdict.json
    RUN_FINISHED = "run_finished"
    MESSAGE = "message"  # anything else worth a line: repairs of an earlier run, warnings


@dataclass(frozen=True)
class RunEvent:
    type: EventType
    t: float | None  # seconds since the load started (negative before it), None if unknown
    data: dict[str, Any] = field(default_factory=dict)
    wall: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "t": self.t, "wall": self.wall, **self.data}


Observer = Callable[[RunEvent], None]


class EventBus:
    """Delivers every event to every observer, one event at a time (requests finish on the load
    generator's thread, faults on the runner's)."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers: list[Observer] = list(observers or [])
        self._lock = threading.Lock()

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def emit(self, event: RunEvent) -> None:
        with self._lock:
            for observer in self.observers:
                observer(event)
