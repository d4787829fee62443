"""Expectations checked after a run, from what was recorded: requests, fault windows, events.

Pure functions over plain data, so each rule is unit-tested without a stack. One classifier
decides a request's outcome (:func:`classify`): *ok* is a 2xx answer from the model asked for,
*degraded* a 2xx answer from the fallback, *shed* a 429, *failed* any other status or a
client-side error (timeout, reset, refused, dropped by the generator). A request is *good* when
it is ok.

The evidence rule: every expectation says what it judged (:class:`Evidence`); with nothing to
judge it is ``no data``, which fails unless the entry says ``allow_no_data: true``. Service events
count from the load's start (t = 0): what the stack said while starting is not a reaction.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from slo import SLO, Evaluation, RequestRecord, evaluate

from ._loadgen import LoadRecord, amplification
from ._scenario import (
    AmplificationBound,
    BudgetCeiling,
    BurnRateAbort,
    CanaryRollback,
    EventExpectation,
    ExpectSpec,
    FallbackShare,
    MetricExpectation,
    Recovery,
    SLOMet,
    Stat,
    StatusShare,
)
from ._verdict import Evidence, Judgement, Outcome, run_consumed

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


class RequestOutcome(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    SHED = "shed"
    FAILED = "failed"


def classify(r: Request) -> RequestOutcome:
    """The one definition of a request's outcome, used by expectations, counts and charts."""
    if r.error is not None or r.status is None:
        return RequestOutcome.FAILED
    if 200 <= r.status < 300:
        return RequestOutcome.DEGRADED if r.degraded else RequestOutcome.OK
    if r.status == 429:
        return RequestOutcome.SHED
    return RequestOutcome.FAILED


def good(r: Request) -> bool:
    return classify(r) is RequestOutcome.OK


def answered(r: Request) -> bool:
    return classify(r) in (RequestOutcome.OK, RequestOutcome.DEGRADED)


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
class _Judge:
    """Builds the outcomes of one expectation: ``no data`` passes only where it is allowed."""

    spec: ExpectSpec
    description: str
    bound: float | None

    def no_data(self, evidence: Evidence, detail: str, measured: float | None = None) -> Outcome:
        return self._outcome(
            Judgement.NO_DATA, self.spec.allow_no_data, measured, evidence, detail=detail
        )

    def of(
        self, met: bool, measured: float | None, evidence: Evidence, detail: str = "",
        fallback_after: int | None = None,
    ) -> Outcome:  # fmt: skip
        judgement = Judgement.MET if met else Judgement.NOT_MET
        return self._outcome(
            judgement, met, measured, evidence, detail=detail, fallback_after=fallback_after
        )

    def _outcome(
        self, judgement: Judgement, passed: bool, measured: float | None, evidence: Evidence,
        *, detail: str, fallback_after: int | None = None,
    ) -> Outcome:  # fmt: skip
        return Outcome(
            kind=self.spec.kind, description=self.description, judgement=judgement,
            passed=passed, measured=measured, bound=self.bound, evidence=evidence,
            detail=detail, fallback_after=fallback_after,
        )  # fmt: skip


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


def time_to_detect(
    events: Sequence[dict[str, Any]], started: float, *, ignore: frozenset[str] | None = None
) -> float | None:
    """Seconds from the start of a fault's ``apply()`` to the service's first reaction to it
    (an event in REACTIONS), leaving out the kinds the fault's own action causes (``ignore``:
    the worker_exited of a replica the harness restarts to reload it is not a detection)."""
    skip = ignore or frozenset()
    times = [
        float(e["t"]) for e in events
        if e.get("kind") in REACTIONS and e.get("kind") not in skip
        and e.get("t") is not None and float(e["t"]) >= started
    ]  # fmt: skip
    return min(times) - started if times else None


def slo_window(
    slo: SLO, finished: Sequence[LoadRecord], pending: Sequence[LoadRecord], *, now: float,
    window: float, timeout: float,
) -> list[RequestRecord]:  # fmt: skip
    """What a probe or abort at ``now`` judges of an SLO over the last ``window``: the requests
    scheduled in it and answered, and those still unanswered after the SLI's threshold (the
    load's ``timeout`` for SLIs without one) as bad ones: whatever their answer, it is too late.
    """
    since = now - window
    threshold = getattr(slo.sli, "threshold", None)
    bound = float(threshold) if threshold is not None else timeout
    records = [r.to_slo() for r in finished if r.scheduled >= since]
    for r in pending:
        age = now - r.scheduled
        if r.scheduled < since or age <= bound:
            continue
        if threshold is not None:  # too slow already: a late success is still bad
            records.append(RequestRecord(r.scheduled, status=200, latency_s=age, ttft_s=age))
        else:
            records.append(RequestRecord(r.scheduled, status=None, error="overdue"))
    return records


def time_to_alert(
    records: Sequence[LoadRecord], slo: SLO, rule: BurnRateAbort, *, started: float,
    end: float, timeout: float, tick: float = 0.25,
) -> float | None:  # fmt: skip
    """Seconds from ``started`` until the burn-rate rule would first have fired, the run
    replayed as the live check saw it every ``tick``: what was answered by then, and what was
    overdue (see :func:`slo_window`). None: it never would have, up to ``end``."""
    ordered = sorted(records, key=lambda r: r.scheduled)
    starts = [r.scheduled for r in ordered]
    t = started
    while t <= end:
        lo, hi = bisect.bisect_left(starts, t - rule.window), bisect.bisect_right(starts, t)
        recent = ordered[lo:hi]
        finished = [r for r in recent if r.end is not None and r.end <= t]
        pending = [r for r in recent if r.sent <= t and (r.end is None or r.end > t)]
        window = slo_window(slo, finished, pending, now=t, window=rule.window, timeout=timeout)
        if len(window) >= rule.min_requests:
            burn = evaluate(slo, window).burn_rate
            if burn is not None and burn > rule.above:
                return t - started
        t += tick
    return None


def first_failure(records: Sequence[Request], applied: float) -> float | None:
    times = [r.scheduled for r in records if r.scheduled >= applied and not good(r)]
    return min(times) - applied if times else None


def statistic(values: Iterable[float], stat: Stat) -> float | None:
    """The one definition of a series' statistic over its samples (None: no sample)."""
    found = list(values)
    if not found:
        return None
    if stat is Stat.MAX:
        return max(found)
    if stat is Stat.MIN:
        return min(found)
    if stat is Stat.MEAN:
        return statistics.fmean(found)
    return found[-1]


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
    metrics: Mapping[str, Sequence[tuple[float, float | None]]] = field(default_factory=dict)
    """Each scraped series: (run time, value or None) per scrape during the load."""
    sent: Sequence[LoadRecord] = ()
    """Every logical request with its attempts and client group, cancelled ones too."""

    @property
    def run_events(self) -> list[dict[str, Any]]:
        """The service's events from the load's start on (t = 0), in time order."""
        timed = [e for e in self.events if e.get("t") is not None and float(e["t"]) >= 0.0]
        return sorted(timed, key=lambda e: float(e["t"]))

    def window(self, fault: str) -> Window:
        return self.windows.get(fault, Window(None, None))


def check(spec: ExpectSpec, facts: Facts) -> Outcome:
    checker = _CHECKS.get(type(spec))
    if checker is None:  # pragma: no cover - every expectation kind has a checker
        raise AssertionError(f"unhandled expectation {spec!r}")
    return checker(spec, facts)


def _requests(n: int) -> Evidence:
    return Evidence(count=n, unit="requests")


def _slo_met(spec: SLOMet, facts: Facts) -> Outcome:
    ev = facts.evaluations[spec.slo]
    text = (
        f"SLO {spec.slo} met (SLI ≥ {ev.slo.target:g})"
        if spec.met
        else f"SLO {spec.slo} missed (SLI < {ev.slo.target:g})"
    )
    judge = _Judge(spec, text, ev.slo.target)
    evidence = Evidence(count=ev.total, unit="events")
    if ev.sli is None:
        return judge.no_data(evidence, f"no events of this SLI ({ev.excluded} requests excluded)")
    consumed = run_consumed(ev) or 0.0
    return judge.of((ev.sli >= ev.slo.target) == spec.met, ev.sli, evidence,
                    f"{consumed:.1%} of the run's budget consumed")  # fmt: skip


def _budget_ceiling(spec: BudgetCeiling, facts: Facts) -> Outcome:
    ev = facts.evaluations[spec.slo]
    text = f"SLO {spec.slo}: at most {spec.max_consumed:.0%} of the run's error budget consumed"
    judge = _Judge(spec, text, spec.max_consumed)
    evidence = Evidence(count=ev.total, unit="events")
    consumed = run_consumed(ev)
    if consumed is None:
        return judge.no_data(evidence, f"no events of this SLI ({ev.excluded} requests excluded)")
    return judge.of(consumed <= spec.max_consumed, consumed, evidence,
                    f"{ev.bad} bad of {ev.total}, SLI {ev.sli:.4g}")  # fmt: skip


def _recovery(spec: Recovery, facts: Facts) -> Outcome:
    judge = _Judge(spec, f"recovered within {spec.within:g}s of the last fault", spec.within)
    ends = [w.end for w in facts.windows.values() if w.end is not None]
    if not ends:
        return judge.no_data(Evidence(count=0, unit="faults"), "no fault applied")
    since = max(ends)
    after = [r for r in facts.records if r.scheduled >= since]
    if not after:
        return judge.no_data(_requests(0), f"no request after the last fault ended ({since:.2f}s)")
    ttr = time_to_recover(facts.records, since, facts.load_end, spec.window)
    detail = (
        f"all requests good from {since + ttr:.2f}s on (the last fault ended at {since:.2f}s)"
        if ttr is not None
        else f"requests were still failing or degraded near the end (after {since:.2f}s)"
    )
    return judge.of(ttr is not None and ttr <= spec.within, ttr, _requests(len(after)), detail)


def _fallback_share(spec: FallbackShare, facts: Facts) -> Outcome:
    window = facts.window(spec.during)
    text = f"fallback served ≥ {spec.min_share:.0%} during {spec.during}"
    if spec.none_after is not None:
        text += f", none from {spec.none_after:g}s after it"
    judge = _Judge(spec, text, spec.min_share)
    if window.applied is None or window.reverted is None:
        return judge.no_data(_requests(0), f"{spec.during} never applied")
    inside = [r for r in _in(facts.records, window.applied, window.reverted) if answered(r)]
    if not inside:
        return judge.no_data(_requests(0), f"no answer during {spec.during}")
    served = sum(r.degraded for r in inside)
    share = served / len(inside)
    detail = f"{served} of {len(inside)} answers in the window"
    if spec.none_after is None:
        return judge.of(share >= spec.min_share, share, _requests(len(inside)), detail)
    since = window.reverted + spec.none_after
    later = [r for r in _in(facts.records, since, float("inf")) if answered(r)]
    if not later:
        detail += f"; no answer from {since:.2f}s on"
        return judge.no_data(_requests(len(inside)), detail, share)
    late = sum(1 for r in later if r.degraded)
    detail += f"; {late} of {len(later)} answers from {since:.2f}s on were fallback"
    met = share >= spec.min_share and late == 0
    return judge.of(met, share, _requests(len(inside) + len(later)), detail, late)


def _canary_rollback(spec: CanaryRollback, facts: Facts) -> Outcome:
    of = f" of {spec.after}" if spec.after else " of the load's start"
    judge = _Judge(spec, f"canary rolled back within {spec.within:g}s{of}", spec.within)
    start = 0.0
    if spec.after is not None:
        applied = facts.window(spec.after).applied
        if applied is None:
            return judge.no_data(Evidence(count=0, unit="events"), f"{spec.after} never applied")
        start = applied
    watched = [e for e in facts.run_events if float(e["t"]) >= start]
    rollbacks = [float(e["t"]) for e in watched if e.get("kind") == "canary_rollback"]
    took = rollbacks[0] - start if rollbacks else None
    detail = (
        f"no canary_rollback among {len(watched)} service events"
        if took is None
        else f"rolled back at {start + took:.2f}s"
    )
    met = took is not None and took <= spec.within
    return judge.of(met, took, Evidence(count=len(watched), unit="events"), detail)


def _event_expectation(spec: EventExpectation, facts: Facts) -> Outcome:
    seen = facts.run_events
    found = [
        e for e in seen
        if e.get("kind") == spec.event
        and all(e.get(k) == v for k, v in spec.details.items())
    ]  # fmt: skip
    wanted = f"{spec.event}{spec.details or ''}"
    evidence = Evidence(count=len(seen), unit="events")
    detail = f"{len(found)} of {len(seen)} service events since the load started"
    if spec.present:
        judge = _Judge(spec, f"event {wanted} at least {spec.min_count}×", spec.min_count)
        return judge.of(len(found) >= spec.min_count, len(found), evidence, detail)
    return _Judge(spec, f"no event {wanted}", 0).of(not found, len(found), evidence, detail)


def _status_share(spec: StatusShare, facts: Facts) -> Outcome:
    bounds = []
    if spec.max_share is not None:
        bounds.append(f"≤ {spec.max_share:.1%}")
    if spec.min_share is not None:
        bounds.append(f"≥ {spec.min_share:.1%}")
    where = "all requests" if spec.during is None else f"requests during {spec.during}"
    bound = spec.max_share if spec.max_share is not None else spec.min_share
    judge = _Judge(spec, f"{spec.status} share of {where} {' and '.join(bounds)}", bound)
    pool = list(facts.records)
    if spec.during is not None:
        window = facts.window(spec.during)
        if window.applied is None:
            return judge.no_data(_requests(0), f"{spec.during} never applied")
        pool = _in(facts.records, window.applied, window.reverted or window.applied)
    if not pool:
        return judge.no_data(_requests(0), "no request to judge")
    share = sum(status_matches(r, spec.status) for r in pool) / len(pool)
    met = (spec.max_share is None or share <= spec.max_share) and (
        spec.min_share is None or share >= spec.min_share
    )
    return judge.of(met, share, _requests(len(pool)))


def _amplification(spec: AmplificationBound, facts: Facts) -> Outcome:
    bounds = [f"≤ {spec.max:g}" if spec.max is not None else "",
              f"≥ {spec.min:g}" if spec.min is not None else ""]  # fmt: skip
    who = "requests" if spec.client is None else f"client {spec.client}'s requests"
    where = "" if spec.during is None else f" during {spec.during}"
    text = f"attempts per request of {who}{where} {' and '.join(b for b in bounds if b)}"
    judge = _Judge(spec, text, spec.max if spec.max is not None else spec.min)
    pool = [r for r in facts.sent if spec.client is None or r.client == spec.client]
    if spec.during is not None:
        window = facts.window(spec.during)
        if window.applied is None:
            return judge.no_data(_requests(0), f"{spec.during} never applied")
        end = window.reverted or window.applied
        pool = [r for r in pool if window.applied <= r.scheduled < end]
    measured = amplification(pool)
    if measured is None:
        return judge.no_data(_requests(0), "no request sent")
    met = (spec.max is None or measured <= spec.max) and (spec.min is None or measured >= spec.min)
    attempts = sum(r.tries for r in pool if r.error != "dropped")
    return judge.of(met, measured, _requests(len(pool)), f"{attempts} attempts")


def _metric(spec: MetricExpectation, facts: Facts) -> Outcome:
    where = ""
    start, end = 0.0, float("inf")
    if spec.during is not None or spec.after is not None:
        fault = spec.during or spec.after or ""
        window = facts.window(fault)
        where = f" during {fault}" if spec.during else f" after {fault}"
    text = f"{spec.stat.value} of {spec.series}{where} {spec.bounds_text()}"
    judge = _Judge(spec, text, spec.at_most if spec.at_most is not None else spec.at_least)
    if where:
        if window.applied is None:
            return judge.no_data(Evidence(count=0, unit="samples"), f"{fault} never applied")
        if spec.during is not None:
            start, end = window.applied, window.reverted or window.applied
        else:
            start = window.end or window.applied
    scrapes = [(t, v) for t, v in facts.metrics.get(spec.series, []) if start <= t < end]
    values = [v for _, v in scrapes if v is not None]
    evidence = Evidence(count=len(values), unit="samples")
    measured = statistic(values, spec.stat)
    if measured is None:
        return judge.no_data(evidence, f"no sample among {len(scrapes)} scrapes in the window")
    detail = f"{len(values)} samples of {len(scrapes)} scrapes from {start:.2f}s"
    return judge.of(spec.holds(measured), measured, evidence, detail)


_CHECKS: dict[type, Callable[[Any, Facts], Outcome]] = {
    SLOMet: _slo_met,
    BudgetCeiling: _budget_ceiling,
    Recovery: _recovery,
    FallbackShare: _fallback_share,
    CanaryRollback: _canary_rollback,
    EventExpectation: _event_expectation,
    StatusShare: _status_share,
    AmplificationBound: _amplification,
    MetricExpectation: _metric,
}
