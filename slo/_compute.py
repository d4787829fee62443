"""Evaluating an SLO over request records: SLI, error budget, burn rates, alerts.

With error budget ``B = 1 - target``, period ``T`` and ``f`` the share of the period the
evaluation covers: ``BR(w) = errorRatio(w) / B``; budget consumed ``= errorRatio · f / B``
(the share of the whole period's budget spent so far, so that the burn rate over everything
seen equals consumed ÷ f); time to exhaustion ``= remaining · T / BR``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._alerts import AlertResult, default_step, evaluate_rules
from ._classify import Classification, Verdict, classify
from ._duration import THIRTY_DAYS
from ._errors import EvaluationError
from ._events import Events, Slice, build_slices, steps_to_cover
from ._extrapolate import (
    BreachCost,
    Extrapolation,
    breach_cost,
    occurrences_cost,
    timeslices_cost,
)
from ._models import SLO, PeriodKind, Timeslices
from ._records import RecordSet, RequestRecord, as_record_set
from ._rules import BurnRateRule


@dataclass(frozen=True)
class WindowStats:
    """Events in the window ``(since, until]`` and the burn rate they make."""

    since: float
    until: float
    good: int
    bad: int
    budget: float

    @property
    def total(self) -> int:
        return self.good + self.bad

    @property
    def error_ratio(self) -> float | None:
        """``None`` for a window with no events."""
        return self.bad / self.total if self.total else None

    @property
    def burn_rate(self) -> float | None:
        """How many times faster than the budget allows errors arrive; ``None`` when the
        window has no events."""
        ratio = self.error_ratio
        return None if ratio is None else ratio / self.budget


@dataclass(frozen=True)
class Evaluation:
    """One SLO evaluated over request records.

    ``good``/``bad``/``total`` count events: requests for occurrences, slices for timeslices,
    inside the budget window ``(since, end]`` (``since`` is ``start``, or ``end - T`` when the
    records span more than a fixed period T, so the period rolls as in Prometheus).
    """

    slo: SLO
    records: RecordSet = field(repr=False)
    start: float
    end: float
    period: float
    """T, seconds (the span itself for ``period: run``)."""
    since: float
    good: int
    bad: int
    excluded: int
    """Records (or slices) in the budget window that are not events of this SLI."""
    slices: tuple[Slice, ...] = field(repr=False)
    """Every timeslice of the span (empty for occurrences)."""
    _classification: Classification = field(repr=False)
    _events: Events = field(repr=False)

    @property
    def total(self) -> int:
        return self.good + self.bad

    @property
    def budget(self) -> float:
        """B = 1 - target."""
        return self.slo.budget

    @property
    def elapsed(self) -> float:
        """Seconds of the period the budget window covers."""
        return self.end - self.since

    @property
    def elapsed_share(self) -> float:
        """The share of the period covered: 1 for ``period: run``."""
        if isinstance(self.slo.period, PeriodKind) or self.period <= 0:
            return 1.0
        return min(1.0, self.elapsed / self.period)

    @property
    def sli(self) -> float | None:
        """good / total; ``None`` when there were no events."""
        return self.good / self.total if self.total else None

    @property
    def error_ratio(self) -> float | None:
        return self.bad / self.total if self.total else None

    @property
    def met(self) -> bool:
        """The SLI reached the target (no events: nothing was violated)."""
        return self.sli is None or self.sli >= self.slo.target

    @property
    def burn_rate(self) -> float | None:
        """The burn rate over the whole budget window."""
        ratio = self.error_ratio
        return None if ratio is None else ratio / self.budget

    @property
    def consumed(self) -> float:
        """Share of the period's error budget spent (above 1: overspent)."""
        rate = self.burn_rate
        return 0.0 if rate is None else rate * self.elapsed_share

    @property
    def remaining(self) -> float:
        """1 - consumed; negative once the budget is overspent."""
        return 1.0 - self.consumed

    def time_to_exhaustion(self, window: float | None = None) -> float | None:
        """Seconds until the remaining budget is gone if errors keep coming at the burn rate
        of the last ``window`` seconds (default: the whole budget window):
        ``remaining · T / BR``. 0 when already spent; ``None`` when nothing burns."""
        rate = self.burn_rate if window is None else self.window(window).burn_rate
        if self.remaining <= 0:
            return 0.0
        if not rate:
            return None
        return self.remaining * self.period / rate

    def window(self, length: float, *, at: float | None = None) -> WindowStats:
        """Events and burn rate in ``(at - length, at]``; ``at`` defaults to the end."""
        _positive("window", length)
        until = self.end if at is None else at
        total, bad = self._events.window(until - length, until)
        return WindowStats(until - length, until, total - bad, bad, self.budget)

    def series(self, resolution: float, *, window: float | None = None) -> tuple[WindowStats, ...]:
        """The burn rate every ``resolution`` seconds from ``start + resolution`` on, each over
        the ``window`` seconds before it (default: ``resolution``, so consecutive points cover
        the span exactly once)."""
        length = resolution if window is None else window
        _positive("window", length)
        count = steps_to_cover(self.end - self.start, resolution)
        points = []
        for k in range(1, count + 1):
            until = self.start + k * resolution
            total, bad = self._events.window(until - length, until)
            points.append(WindowStats(until - length, until, total - bad, bad, self.budget))
        return tuple(points)

    def alerts(
        self, rules: Sequence[BurnRateRule] | None = None, *, step: float | None = None
    ) -> tuple[AlertResult, ...]:
        """Evaluate burn-rate rules over the span every ``step`` seconds. ``rules`` default to
        the SLO's own, else the SRE Workbook defaults scaled to the period; ``step`` defaults
        to a fifth of the shortest short window."""
        if self.period <= 0:
            raise EvaluationError(
                "alert rules need a period longer than zero: the span is a single instant "
                "(pass start and end, or give the SLO a fixed period)"
            )
        chosen = tuple(rules) if rules is not None else self.slo.alert_rules(self.period)
        if not chosen:
            return ()
        return evaluate_rules(
            self._events,
            chosen,
            end=self.end,
            budget=self.budget,
            period=self.period,
            step=default_step(chosen) if step is None else step,
        )

    def verdicts(self) -> list[Verdict]:
        """Each record's verdict under this SLI, in the order the records were given.
        Records outside ``[start, end]`` are ``EXCLUDED``."""
        lo, hi = self._events_span()
        in_time_order = self._classification.verdicts(len(self.records))
        in_time_order[:lo] = [Verdict.EXCLUDED] * lo
        in_time_order[hi:] = [Verdict.EXCLUDED] * (len(self.records) - hi)
        return self.records.to_input_order(in_time_order)

    def bad_records(self) -> list[RequestRecord]:
        """The records in ``[start, end]`` that were bad events of the SLI (they spent the
        budget), in time order."""
        lo, hi = self._events_span()
        return [self.records[p] for p in self._classification.bad if lo <= p < hi]

    def breach_cost(self, period: float | None = None) -> BreachCost | None:
        """This run priced by the time it breached the SLO (error ratio × the evaluated span)
        against a production ``period``'s budget (default: the SLO's fixed period, or 30 days
        for ``period: run``). None without events: nothing to price."""
        ratio = self.error_ratio
        if ratio is None:
            return None
        horizon = period
        if horizon is None:
            horizon = THIRTY_DAYS if isinstance(self.slo.period, PeriodKind) else self.period
        _positive("period", horizon)
        return breach_cost(
            error_ratio=ratio, span=self.end - self.start, budget=self.budget, period=horizon
        )

    def extrapolate(
        self, production_rps: float | None = None, *, period: float | None = None
    ) -> Extrapolation:
        """What this run's bad events would cost out of a production period's budget
        (``period`` defaults to the SLO's, or 30 days for ``period: run``).

        For occurrences, ``production_rps`` (requests per second in production) is needed;
        for timeslices each bad slice costs one slice whatever the rate.
        """
        horizon = period
        if horizon is None:
            horizon = THIRTY_DAYS if isinstance(self.slo.period, PeriodKind) else self.period
        _positive("period", horizon)
        if isinstance(self.slo.budgeting, Timeslices):
            return timeslices_cost(
                bad=self.bad,
                budget=self.budget,
                period=horizon,
                slice_length=self.slo.budgeting.slice,
            )
        if production_rps is None:
            raise EvaluationError("extrapolating an occurrences SLO needs production_rps")
        _positive("production_rps", production_rps)
        i, j = self._events.positions(self.since, self.end)
        return occurrences_cost(
            bad=self.bad,
            events=self.total,
            records=j - i,
            budget=self.budget,
            period=horizon,
            production_rps=production_rps,
        )

    def to_dict(self) -> dict[str, Any]:
        """The headline numbers, JSON-ready."""
        return {
            "name": self.slo.name,
            "sli_kind": str(self.slo.sli.kind),
            "budgeting": str(self.slo.budgeting.method),
            "target": self.slo.target,
            "budget": self.budget,
            "period_s": self.period,
            "start": self.start,
            "end": self.end,
            "elapsed_s": self.elapsed,
            "elapsed_share": self.elapsed_share,
            "good": self.good,
            "bad": self.bad,
            "total": self.total,
            "excluded": self.excluded,
            "sli": self.sli,
            "error_ratio": self.error_ratio,
            "burn_rate": self.burn_rate,
            "consumed": self.consumed,
            "remaining": self.remaining,
            "time_to_exhaustion_s": self.time_to_exhaustion(),
            "met": self.met,
        }

    def _events_span(self) -> tuple[int, int]:
        return self.records.span_positions(self.start, self.end)


def evaluate(
    slo: SLO,
    records: Iterable[RequestRecord] | RecordSet,
    *,
    start: float | None = None,
    end: float | None = None,
) -> Evaluation:
    """Evaluate ``slo`` over ``records`` between ``start`` and ``end`` (both included;
    default: the first and the last record). Pass a ``RecordSet`` to evaluate many SLOs over
    the same records without rebuilding it."""
    record_set = as_record_set(records)
    first, last = _span(record_set, start, end)
    lo, hi = record_set.span_positions(first, last)
    span = last - first
    period = slo.period_seconds(span)
    classification = classify(slo.sli, record_set)
    events = Events(
        record_set.times,
        classification.bad,
        classification.excluded,
        lo,
        hi,
        first,
        grid_cache=record_set.grid_cache,
    )
    slices: tuple[Slice, ...] = ()
    if isinstance(slo.budgeting, Timeslices):
        events, slices = build_slices(events, last, slo.budgeting)
    rolling = not isinstance(slo.period, PeriodKind) and span > period
    since = last - period if rolling else first
    i, j = events.positions(since, last)
    total, bad = events.counts(i, j)
    return Evaluation(
        slo=slo,
        records=record_set,
        start=first,
        end=last,
        period=period,
        since=since,
        good=total - bad,
        bad=bad,
        excluded=(j - i) - total,
        slices=slices,
        _classification=classification,
        _events=events,
    )


def _span(records: RecordSet, start: float | None, end: float | None) -> tuple[float, float]:
    times = records.times
    first = start if start is not None else (times[0] if times else 0.0)
    last = end if end is not None else (times[-1] if times else first)
    if not (math.isfinite(first) and math.isfinite(last)):
        raise EvaluationError(f"start and end must be finite: {first!r}, {last!r}")
    if last < first:
        raise EvaluationError(f"end {last!r} is before start {first!r}")
    return float(first), float(last)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise EvaluationError(f"{name} must be a positive number, got {value!r}")
