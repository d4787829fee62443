"""Expectations checked after a run, from what was recorded: requests, fault windows, events.

Pure functions over plain data, so each rule is unit-tested without a stack. A request is
*good* when it got a 2xx answer from the model it asked for (not the fallback); a failure is a
non-2xx status or a client-side error (timeout, reset, refused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from slo import Evaluation

from ._scenario import (
    BudgetCeiling,
    CanaryRollback,
    EventExpectation,
    ExpectSpec,
    FallbackShare,
    Recovery,
    SLOMet,
    StatusShare,
)

# Gateway and supervisor events that show the service noticed a fault.
REACTIONS = frozenset({
    "replica_down", "breaker_open", "fallback_on", "canary_rollback", "worker_exited",
    "model_load_refused", "shed",
})  # fmt: skip


class Request(Protocol):
    @property
    def scheduled(self) -> float: ...
    @property
    def status(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def degraded(self) -> bool: ...


def good(r: Request) -> bool:
    return r.error is None and r.status is not None and 200 <= r.status < 300 and not r.degraded


def answered(r: Request) -> bool:
    return r.error is None and r.status is not None and 200 <= r.status < 300


def status_matches(r: Request, pattern: str) -> bool:
    if pattern == "error":
        return r.error is not None
    if r.status is None or r.error is not None:
        return False
    if pattern.endswith("xx"):
        return r.status // 100 == int(pattern[0])
    return r.status == int(pattern)


@dataclass(frozen=True)
class Window:
    """When a fault was really applied and reverted, in run time (None: never / not yet)."""

    applied: float | None
    reverted: float | None

    @property
    def end(self) -> float | None:
        return self.reverted if self.reverted is not None else self.applied


@dataclass(frozen=True)
class Outcome:
    kind: str
    description: str
    passed: bool
    measured: float | None
    bound: float | None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "description": self.description, "passed": self.passed,
            "measured": self.measured, "bound": self.bound, "detail": self.detail, **self.extra,
        }  # fmt: skip


def time_to_recover(
    records: Sequence[Request], since: float, load_end: float, window: float
) -> float | None:
    """Seconds from ``since`` until every later request is good, or None if that never held for
    at least ``window`` seconds before the load ended."""
    after = sorted((r for r in records if r.scheduled >= since), key=lambda r: r.scheduled)
    last_bad = max((i for i, r in enumerate(after) if not good(r)), default=None)
    if last_bad is None:
        recovered_at = since
    elif last_bad + 1 < len(after):
        recovered_at = after[last_bad + 1].scheduled
    else:
        return None  # the very last request still failed
    if load_end - recovered_at < window:
        return None  # too little time left to call it recovered
    return recovered_at - since


def time_to_detect(events: Sequence[dict[str, Any]], applied: float) -> float | None:
    """Seconds from a fault to the service's first reaction to it (an event in REACTIONS)."""
    times = [
        float(e["t"]) for e in events
        if e.get("kind") in REACTIONS and e.get("t") is not None and float(e["t"]) >= applied
    ]  # fmt: skip
    return min(times) - applied if times else None


def first_failure(records: Sequence[Request], applied: float) -> float | None:
    times = [r.scheduled for r in records if r.scheduled >= applied and not good(r)]
    return min(times) - applied if times else None


def _in(records: Sequence[Request], start: float, end: float) -> list[Request]:
    return [r for r in records if start <= r.scheduled < end]


@dataclass(frozen=True)
class Facts:
    """What a run recorded, as the expectations see it."""

    records: Sequence[Request]
    windows: dict[str, Window]
    events: Sequence[dict[str, Any]]
    evaluations: dict[str, Evaluation]
    load_end: float


def check(spec: ExpectSpec, facts: Facts) -> Outcome:
    checker = _CHECKS.get(type(spec))
    if checker is None:  # pragma: no cover - every expectation kind has a checker
        raise AssertionError(f"unhandled expectation {spec!r}")
    return checker(spec, facts)


def _slo_met(spec: SLOMet, facts: Facts) -> Outcome:
    ev = facts.evaluations[spec.slo]
    text = f"SLO {spec.slo} met (SLI ≥ {ev.slo.target:g})"
    return Outcome(spec.kind, text, ev.met, ev.sli, ev.slo.target,
                   f"{ev.total} events, {ev.consumed:.1%} of the budget consumed")  # fmt: skip


def _budget_ceiling(spec: BudgetCeiling, facts: Facts) -> Outcome:
    ev = facts.evaluations[spec.slo]
    text = f"SLO {spec.slo}: at most {spec.max_consumed:.0%} of the error budget consumed"
    return Outcome(spec.kind, text, ev.consumed <= spec.max_consumed, ev.consumed,
                   spec.max_consumed, f"SLI {ev.sli}")  # fmt: skip


def _recovery(spec: Recovery, facts: Facts) -> Outcome:
    ends = [w.end for w in facts.windows.values() if w.end is not None]
    since = max(ends, default=0.0)
    ttr = time_to_recover(facts.records, since, facts.load_end, spec.window)
    text = f"recovered within {spec.within:g}s of the last fault"
    detail = (
        f"all requests good from {since + ttr:.2f}s on (last fault ended {since:.2f}s)"
        if ttr is not None
        else f"requests were still failing or degraded near the end (after {since:.2f}s)"
    )
    return Outcome(spec.kind, text, ttr is not None and ttr <= spec.within, ttr, spec.within,
                   detail)  # fmt: skip


def _fallback_share(spec: FallbackShare, facts: Facts) -> Outcome:
    window = facts.windows.get(spec.during, Window(None, None))
    text = f"fallback served ≥ {spec.min_share:.0%} during {spec.during}"
    if window.applied is None or window.reverted is None:
        return Outcome(spec.kind, text, False, None, spec.min_share, "the fault never ran")
    inside = [r for r in _in(facts.records, window.applied, window.reverted) if answered(r)]
    share = sum(r.degraded for r in inside) / len(inside) if inside else 0.0
    passed = bool(inside) and share >= spec.min_share
    detail = f"{sum(r.degraded for r in inside)} of {len(inside)} answers in the window"
    extra: dict[str, Any] = {}
    if spec.none_after is not None:
        later = _in(facts.records, window.reverted + spec.none_after, float("inf"))
        late = sum(1 for r in later if r.degraded)
        passed = passed and late == 0
        detail += f"; {late} fallback answers {spec.none_after:g}s or more after it ended"
        text += f", none from {spec.none_after:g}s after it"
        extra["fallback_after"] = late
    return Outcome(spec.kind, text, passed, share, spec.min_share, detail, extra)


def _canary_rollback(spec: CanaryRollback, facts: Facts) -> Outcome:
    start = 0.0
    if spec.after is not None:
        start = facts.windows.get(spec.after, Window(None, None)).applied or 0.0
    rollbacks = [
        float(e["t"]) for e in facts.events
        if e.get("kind") == "canary_rollback" and e.get("t") is not None
        and float(e["t"]) >= start
    ]  # fmt: skip
    took = min(rollbacks) - start if rollbacks else None
    text = f"canary rolled back within {spec.within:g}s" + (
        f" of {spec.after}" if spec.after else ""
    )
    detail = "no canary_rollback event" if took is None else f"rolled back at {start + took:.2f}s"
    return Outcome(spec.kind, text, took is not None and took <= spec.within, took,
                   spec.within, detail)  # fmt: skip


def _event_expectation(spec: EventExpectation, facts: Facts) -> Outcome:
    found = [
        e for e in facts.events
        if e.get("kind") == spec.event
        and all(e.get(k) == v for k, v in spec.details.items())
    ]  # fmt: skip
    wanted = f"{spec.event}{spec.details or ''}"
    if spec.present:
        text = f"event {wanted} at least {spec.min_count}×"
        return Outcome(spec.kind, text, len(found) >= spec.min_count, len(found),
                       spec.min_count)  # fmt: skip
    return Outcome(spec.kind, f"no event {wanted}", not found, len(found), 0)


def _status_share(spec: StatusShare, facts: Facts) -> Outcome:
    pool = list(facts.records)
    where = "all requests"
    if spec.during is not None:
        window = facts.windows.get(spec.during, Window(None, None))
        if window.applied is None:
            return Outcome(spec.kind, f"status {spec.status}", False, None, None,
                           "the fault never ran")  # fmt: skip
        pool = _in(facts.records, window.applied, window.end or window.applied)
        if window.reverted is not None:
            pool = _in(facts.records, window.applied, window.reverted)
        where = f"requests during {spec.during}"
    share = sum(status_matches(r, spec.status) for r in pool) / len(pool) if pool else 0.0
    passed = bool(pool)
    bounds = []
    if spec.max_share is not None:
        passed = passed and share <= spec.max_share
        bounds.append(f"≤ {spec.max_share:.1%}")
    if spec.min_share is not None:
        passed = passed and share >= spec.min_share
        bounds.append(f"≥ {spec.min_share:.1%}")
    text = f"{spec.status} share of {where} {' and '.join(bounds)}"
    bound = spec.max_share if spec.max_share is not None else spec.min_share
    return Outcome(spec.kind, text, passed, share, bound, f"{len(pool)} requests")


_CHECKS: dict[type, Callable[[Any, Facts], Outcome]] = {
    SLOMet: _slo_met,
    BudgetCeiling: _budget_ceiling,
    Recovery: _recovery,
    FallbackShare: _fallback_share,
    CanaryRollback: _canary_rollback,
    EventExpectation: _event_expectation,
    StatusShare: _status_share,
}
