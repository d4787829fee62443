"""A deliberately naive re-implementation of the SLO maths, record by record and window by
window, for property tests to compare the fast library against. Shares no code with it
beyond the model classes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from slo import (
    SLO,
    AvailabilitySLI,
    DegradedSLI,
    EmptySlices,
    FailurePolicy,
    LatencySLI,
    Op,
    RequestRecord,
    Timeslices,
    Verdict,
)


def record_verdict(slo: SLO, record: RequestRecord) -> Verdict:
    sli = slo.sli
    status = record.status if record.error is None else None
    succeeded = status is not None and status < 400
    if isinstance(sli, AvailabilitySLI):
        for pattern in sli.bad:
            text = str(pattern)
            if text == "error" and status is None:
                return Verdict.BAD
            if text.endswith("xx") and status is not None and status // 100 == int(text[0]):
                return Verdict.BAD
            if text.isdigit() and status == int(text):
                return Verdict.BAD
        return Verdict.GOOD
    if not succeeded:
        return Verdict.BAD if sli.failures is FailurePolicy.BAD else Verdict.EXCLUDED
    if isinstance(sli, DegradedSLI):
        return Verdict.BAD if record.degraded else Verdict.GOOD
    value = record.latency_s if isinstance(sli, LatencySLI) else record.ttft_s
    if value is None:
        return Verdict.EXCLUDED
    within = value <= sli.threshold if sli.op is Op.LTE else value < sli.threshold
    return Verdict.GOOD if within else Verdict.BAD


@dataclass(frozen=True)
class Event:
    time: float
    verdict: Verdict


def events(slo: SLO, records: Sequence[RequestRecord], start: float, end: float) -> list[Event]:
    """Occurrences: one event per record in [start, end]. Timeslices: one per slice, at its
    end."""
    inside = [r for r in records if start <= r.timestamp <= end]
    per_record = [Event(r.timestamp, record_verdict(slo, r)) for r in inside]
    budgeting = slo.budgeting
    if not isinstance(budgeting, Timeslices):
        return per_record
    length = budgeting.slice
    count = max(1, math.ceil((end - start) / length - 1e-9))
    result = []
    for k in range(count):
        lo = start + k * length
        hi = start + (k + 1) * length
        last = k == count - 1
        members = [e for e in per_record if lo <= e.time and (e.time < hi or last)]
        counted = [e for e in members if e.verdict is not Verdict.EXCLUDED]
        if not counted:
            good = budgeting.empty_slices is EmptySlices.GOOD
            verdict = Verdict.GOOD if good else Verdict.EXCLUDED
        else:
            share = sum(e.verdict is Verdict.GOOD for e in counted) / len(counted)
            verdict = Verdict.GOOD if share >= budgeting.slice_target else Verdict.BAD
        result.append(Event(end if last else hi, verdict))
    return result


def window(evts: Sequence[Event], since: float, until: float, start: float) -> tuple[int, int]:
    """(events, bad) with since < time <= until; since <= start reaches back to start."""
    chosen = [
        e
        for e in evts
        if (e.time > since or since <= start)
        and e.time <= until
        and e.verdict is not Verdict.EXCLUDED
    ]
    return len(chosen), sum(e.verdict is Verdict.BAD for e in chosen)


def firing_times(
    evts: Sequence[Event],
    *,
    start: float,
    end: float,
    step: float,
    long_window: float,
    short_window: float,
    factor: float,
    budget: float,
) -> list[float]:
    """Every grid instant at which a rule fires."""
    count = max(1, math.ceil((end - start) / step - 1e-9))
    fired = []
    for k in range(count + 1):
        t = start + k * step
        burning = True
        for length in (long_window, short_window):
            total, bad = window(evts, t - length, t, start)
            burning = burning and total > 0 and bad / total / budget > factor
        if burning:
            fired.append(t)
    return fired
