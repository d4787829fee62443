"""Properties over random runs, checked against a naive record-by-record reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slo import (
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    BurnRateRule,
    DegradedSLI,
    EmptySlices,
    FailurePolicy,
    LatencySLI,
    Occurrences,
    Op,
    PeriodKind,
    RecordSet,
    RequestRecord,
    Severity,
    Timeslices,
    Verdict,
    evaluate,
)
from slo._models import SLI

from . import reference

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)

# Half-second timestamps make ties, and records exactly on window and slice edges, common.
times = st.integers(min_value=0, max_value=120).map(lambda k: k / 2)
measures = st.one_of(st.none(), st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0, 2.0]))


@st.composite
def records(draw: st.DrawFn) -> RequestRecord:
    return RequestRecord(
        draw(times),
        status=draw(st.sampled_from([200, 200, 200, 201, 404, 429, 500, 503, None])),
        latency_s=draw(measures),
        ttft_s=draw(measures),
        degraded=draw(st.booleans()),
        error=draw(st.sampled_from([None, None, None, None, "timeout"])),
    )


failure_policies = st.sampled_from(FailurePolicy)
ops = st.sampled_from(Op)
# Built through lambdas: st.builds() would infer pydantic fields by their camelCase aliases.
slis: st.SearchStrategy[SLI] = st.one_of(
    st.lists(st.sampled_from(["5xx", "4xx", "429", "error", "503"]), min_size=1).map(
        lambda bad: AvailabilitySLI(bad=bad)  # type: ignore[arg-type]
    ),
    st.tuples(st.sampled_from([0.25, 0.5, 1.0]), ops, failure_policies).map(
        lambda a: LatencySLI(threshold=a[0], op=a[1], failures=a[2])
    ),
    st.tuples(st.sampled_from([0.25, 0.5]), ops, failure_policies).map(
        lambda a: TTFTSLI(threshold=a[0], op=a[1], failures=a[2])
    ),
    failure_policies.map(lambda f: DegradedSLI(failures=f)),
)
budgetings: st.SearchStrategy[Occurrences | Timeslices] = st.one_of(
    st.just(Occurrences()),
    st.tuples(
        st.sampled_from([2.5, 5.0, 7.0]),
        st.sampled_from([0.5, 0.75, 1.0]),
        st.sampled_from(EmptySlices),
    ).map(lambda a: Timeslices(slice=a[0], slice_target=a[1], empty_slices=a[2])),
)


RUN = PeriodKind.RUN
periods: list[float | PeriodKind] = [RUN, 3600.0, 30 * 86400.0]


@st.composite
def slos(draw: st.DrawFn, *, period: float | PeriodKind | None = None) -> SLO:
    return SLO(
        name="p",
        sli=draw(slis),
        target=draw(st.sampled_from([0.5, 0.9, 0.99])),
        period=draw(st.sampled_from(periods)) if period is None else period,
        budgeting=draw(budgetings),
    )


runs = st.lists(records(), min_size=1, max_size=60)


@PROPERTY_SETTINGS
@given(slos(), runs)
def test_verdicts_match_the_reference(slo: SLO, run: list[RequestRecord]) -> None:
    result = evaluate(slo, run)
    assert result.verdicts() == [reference.record_verdict(slo, r) for r in run]


@PROPERTY_SETTINGS
@given(slos(period=RUN), runs)
def test_counts_match_the_reference(slo: SLO, run: list[RequestRecord]) -> None:
    result = evaluate(slo, run)
    start, end = min(r.timestamp for r in run), max(r.timestamp for r in run)
    events = reference.events(slo, run, start, end)
    total, bad = reference.window(events, start, end, start)
    assert (result.total, result.bad) == (total, bad)
    assert result.excluded == sum(e.verdict is Verdict.EXCLUDED for e in events)


@PROPERTY_SETTINGS
@given(
    slos(),
    runs,
    st.floats(min_value=-5, max_value=70, allow_nan=False).map(lambda x: round(x * 2) / 2),
    st.sampled_from([0.5, 1.0, 3.0, 10.0, 100.0]),
)
def test_windows_match_the_reference(
    slo: SLO, run: list[RequestRecord], at: float, length: float
) -> None:
    result = evaluate(slo, run)
    events = reference.events(slo, run, result.start, result.end)
    window = result.window(length, at=at)
    assert (window.total, window.bad) == reference.window(events, at - length, at, result.start)


@PROPERTY_SETTINGS
@given(slos(), runs, st.sampled_from([0.5, 2.0, 4.0]), st.sampled_from([1.0, 3.5, 6.0]))
def test_windows_add_up(slo: SLO, run: list[RequestRecord], first: float, second: float) -> None:
    result = evaluate(slo, run)
    middle = result.start + first
    end = middle + second
    left = result.window(first, at=middle)
    right = result.window(second, at=end)
    both = result.window(first + second, at=end)
    assert (left.good + right.good, left.bad + right.bad) == (both.good, both.bad)


@PROPERTY_SETTINGS
@given(slos(period=RUN), runs, st.sampled_from([0.5, 1.0, 3.0, 7.5]))
def test_series_partitions_the_span(slo: SLO, run: list[RequestRecord], resolution: float) -> None:
    result = evaluate(slo, run)
    series = result.series(resolution)
    assert sum(p.total for p in series) == result.total
    assert sum(p.bad for p in series) == result.bad


@PROPERTY_SETTINGS
@given(slos(), runs, st.data())
def test_budget_consumed_is_monotone_in_added_bad_events(
    slo: SLO, run: list[RequestRecord], data: st.DataObject
) -> None:
    start, end = 0.0, 60.0
    run = [r for r in run if r.timestamp <= end]
    before = evaluate(slo, run, start=start, end=end)
    at = data.draw(times.filter(lambda t: t <= end))
    bad = _bad_record(slo.sli, at)
    assert reference.record_verdict(slo, bad) is Verdict.BAD
    after = evaluate(slo, [*run, bad], start=start, end=end)
    assert after.consumed >= before.consumed
    assert after.bad >= before.bad


@PROPERTY_SETTINGS
@given(slos(), runs)
def test_whole_span_burn_rate_is_consumed_over_elapsed_share(
    slo: SLO, run: list[RequestRecord]
) -> None:
    result = evaluate(slo, run, start=0, end=60 if len(run) > 1 else 0.5 + run[0].timestamp)
    whole = result.window(result.elapsed, at=result.end)
    if whole.burn_rate is None:
        assert result.consumed == 0
        return
    assert whole.burn_rate == pytest.approx(result.burn_rate)
    assert whole.burn_rate == pytest.approx(result.consumed / result.elapsed_share)


@PROPERTY_SETTINGS
@given(
    slos(period=30 * 86400.0),
    runs,
    st.sampled_from([0.5, 1.0, 1.5, 0.7]),
    st.sampled_from([(10.0, 2.0), (20.0, 4.5), (3.0, 1.0)]),
    st.sampled_from([0.5, 2.0, 5.0]),
)
def test_alerts_match_a_brute_force_evaluation(
    slo: SLO,
    run: list[RequestRecord],
    step: float,
    windows: tuple[float, float],
    percent: float,
) -> None:
    long_window, short_window = windows
    rule = BurnRateRule(
        name="r",
        severity=Severity.PAGE,
        budget_percent=percent,
        long_window=long_window,
        short_window=short_window,
    )
    result = evaluate(slo, run, start=0, end=60)
    (alert,) = result.alerts([rule], step=step)
    fired = reference.firing_times(
        reference.events(slo, run, 0, 60),
        start=0,
        end=60,
        step=step,
        long_window=long_window,
        short_window=short_window,
        factor=rule.factor(result.period),
        budget=slo.budget,
    )
    assert [t for t in _grid(60, step) if alert.firing_at(t)] == fired


def _bad_record(sli: SLI, at: float) -> RequestRecord:
    """A record that is a bad event of ``sli``."""
    if isinstance(sli, AvailabilitySLI):
        pattern = str(sli.bad[0])
        if pattern == "error":
            return RequestRecord(at, error="timeout")
        return RequestRecord(at, status=int(pattern.replace("xx", "03")))
    if isinstance(sli, DegradedSLI):
        return RequestRecord(at, status=200, degraded=True)
    return RequestRecord(at, status=200, latency_s=100.0, ttft_s=100.0)


def _grid(end: float, step: float) -> list[float]:
    count = 0
    while count * step < end - 1e-9:
        count += 1
    return [k * step for k in range(count + 1)]


@PROPERTY_SETTINGS
@given(slos(), runs, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(slo: SLO, run: list[RequestRecord], rng: object) -> None:
    shuffled = list(run)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    ordered = evaluate(slo, run)
    again = evaluate(slo, RecordSet(shuffled))
    assert (ordered.good, ordered.bad, ordered.excluded) == (again.good, again.bad, again.excluded)
    by_record = dict(zip(map(id, run), ordered.verdicts(), strict=True))
    assert again.verdicts() == [by_record[id(r)] for r in shuffled]
