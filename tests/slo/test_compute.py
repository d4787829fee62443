"""Evaluation against hand-computed fixtures: every SLI kind, both budgeting methods, window
edges, rolling periods, extrapolation."""

from __future__ import annotations

import pytest

from slo import (
    ITLSLI,
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    DegradedSLI,
    EmptySlices,
    EvaluationError,
    FailurePolicy,
    LatencySLI,
    Occurrences,
    Op,
    PeriodKind,
    RecordSet,
    RequestRecord,
    Timeslices,
    Verdict,
    evaluate,
)
from slo._models import SLI

G, B, X = Verdict.GOOD, Verdict.BAD, Verdict.EXCLUDED


def slo_for(
    sli: SLI,
    target: float = 0.9,
    period: float | PeriodKind = PeriodKind.RUN,
    budgeting: Occurrences | Timeslices | None = None,
) -> SLO:
    return SLO(
        name="s", sli=sli, target=target, period=period, budgeting=budgeting or Occurrences()
    )


# ---- availability -------------------------------------------------------------------------

AVAILABILITY = [
    RequestRecord(0, status=200),
    RequestRecord(1, status=200),
    RequestRecord(2, status=503),
    RequestRecord(3, status=200),
    RequestRecord(4, status=429),
    RequestRecord(5, status=200),
    RequestRecord(6, error="timeout"),
    RequestRecord(7, status=200),
    RequestRecord(8, status=404),
    RequestRecord(9, status=200, error="stream"),  # headers came, the stream broke
]


def test_availability_default_bad_outcomes() -> None:
    result = evaluate(slo_for(AvailabilitySLI()), AVAILABILITY)
    assert result.verdicts() == [G, G, B, G, B, G, B, G, G, B]
    assert (result.good, result.bad, result.total, result.excluded) == (6, 4, 10, 0)
    assert result.sli == 0.6
    assert result.budget == 0.1
    assert result.error_ratio == 0.4
    assert result.burn_rate == 4.0
    assert result.elapsed_share == 1.0
    assert result.consumed == 4.0
    assert result.remaining == -3.0
    assert result.time_to_exhaustion() == 0.0
    assert not result.met
    assert [r.timestamp for r in result.bad_records()] == [2, 4, 6, 9]


@pytest.mark.parametrize(
    ("bad", "verdicts"),
    [
        (["5xx", "error"], [G, G, B, G, G, G, B, G, G, B]),
        (["4xx"], [G, G, G, G, B, G, G, G, B, G]),
        ([429], [G, G, G, G, B, G, G, G, G, G]),
    ],
)
def test_availability_configurable_bad_outcomes(bad: list[object], verdicts: list[Verdict]) -> None:
    result = evaluate(slo_for(AvailabilitySLI(bad=bad)), AVAILABILITY)  # type: ignore[arg-type]
    assert result.verdicts() == verdicts


# ---- latency ------------------------------------------------------------------------------

LATENCY = [
    RequestRecord(0, status=200, latency_s=0.1),
    RequestRecord(1, status=200, latency_s=0.5),  # exactly at the threshold
    RequestRecord(2, status=200, latency_s=0.7),
    RequestRecord(3, status=503, latency_s=0.05),  # failed, however fast
    RequestRecord(4, error="timeout"),
    RequestRecord(5, status=200),  # succeeded, latency not measured
    RequestRecord(6, status=200, latency_s=0.5000001),
    RequestRecord(7, status=429, latency_s=0.01),
]


@pytest.mark.parametrize(
    ("op", "failures", "verdicts", "sli"),
    [
        (Op.LTE, FailurePolicy.EXCLUDE, [G, G, B, X, X, X, B, X], 0.5),
        (Op.LT, FailurePolicy.EXCLUDE, [G, B, B, X, X, X, B, X], 0.25),
        (Op.LTE, FailurePolicy.BAD, [G, G, B, B, B, X, B, B], 2 / 7),
    ],
)
def test_latency(op: Op, failures: FailurePolicy, verdicts: list[Verdict], sli: float) -> None:
    result = evaluate(slo_for(LatencySLI(threshold=0.5, op=op, failures=failures)), LATENCY)
    assert result.verdicts() == verdicts
    assert result.sli == sli
    assert result.excluded == verdicts.count(X)


def test_nan_latency_never_meets_the_threshold() -> None:
    records = [RequestRecord(0, status=200, latency_s=float("nan"))]
    assert evaluate(slo_for(LatencySLI(threshold=1)), records).verdicts() == [B]


# ---- time to first token ------------------------------------------------------------------

TTFT = [
    RequestRecord(0, status=200, latency_s=2.0, ttft_s=0.2),
    RequestRecord(1, status=200, latency_s=2.0),  # not streamed
    RequestRecord(2, status=200, latency_s=2.0, ttft_s=0.3),
    RequestRecord(3, status=200, latency_s=2.0, ttft_s=0.31),
    RequestRecord(4, status=500),
    RequestRecord(5, status=200, latency_s=2.0, ttft_s=0.1, degraded=True),
]


@pytest.mark.parametrize(
    ("failures", "verdicts", "sli"),
    [
        (FailurePolicy.EXCLUDE, [G, X, G, B, X, G], 0.75),
        (FailurePolicy.BAD, [G, X, G, B, B, G], 0.6),
    ],
)
def test_ttft(failures: FailurePolicy, verdicts: list[Verdict], sli: float) -> None:
    result = evaluate(slo_for(TTFTSLI(threshold=0.3, failures=failures)), TTFT)
    assert result.verdicts() == verdicts
    assert result.sli == sli


# ---- inter-token latency -----------------------------------------------------------------

ITL = [
    RequestRecord(0, status=200, latency_s=2.0, ttft_s=0.2, itl_s=0.05),
    RequestRecord(1, status=200, latency_s=2.0, ttft_s=0.2),  # one token: no gap
    RequestRecord(2, status=200, latency_s=2.0, ttft_s=0.1, itl_s=0.5),  # stalled at the bound
    RequestRecord(3, status=200, latency_s=3.0, ttft_s=0.1, itl_s=1.5),  # stalled
    RequestRecord(4, status=200, error="reset", ttft_s=0.1, itl_s=0.01),  # cut short
]


@pytest.mark.parametrize(
    ("failures", "op", "verdicts"),
    [
        (FailurePolicy.EXCLUDE, Op.LTE, [G, X, G, B, X]),
        (FailurePolicy.EXCLUDE, Op.LT, [G, X, B, B, X]),
        (FailurePolicy.BAD, Op.LTE, [G, X, G, B, B]),
    ],
)
def test_itl_judges_the_longest_gap(
    failures: FailurePolicy, op: Op, verdicts: list[Verdict]
) -> None:
    result = evaluate(slo_for(ITLSLI(threshold=0.5, op=op, failures=failures)), ITL)
    assert result.verdicts() == verdicts


# ---- degraded share -----------------------------------------------------------------------

DEGRADED = [
    RequestRecord(0, status=200),
    RequestRecord(1, status=200, degraded=True),
    RequestRecord(2, status=503),
    RequestRecord(3, status=200, degraded=True),
    RequestRecord(4, status=200),
    RequestRecord(5, error="connect"),
]


@pytest.mark.parametrize(
    ("failures", "verdicts", "sli"),
    [
        (FailurePolicy.EXCLUDE, [G, B, X, B, G, X], 0.5),
        (FailurePolicy.BAD, [G, B, B, B, G, B], 1 / 3),
    ],
)
def test_degraded(failures: FailurePolicy, verdicts: list[Verdict], sli: float) -> None:
    result = evaluate(slo_for(DegradedSLI(failures=failures)), DEGRADED)
    assert result.verdicts() == verdicts
    assert result.sli == sli


# ---- timeslices ---------------------------------------------------------------------------

SLICED = [
    RequestRecord(0, status=200),
    RequestRecord(2, status=200),
    RequestRecord(4, status=200),
    RequestRecord(6, status=503),  # slice [0, 10): 3 of 4 good = 0.75: good
    RequestRecord(10, status=503),  # exactly on a boundary: belongs to [10, 20)
    RequestRecord(15, status=200),  # slice [10, 20): 1 of 2: bad
    # slice [20, 30): empty
    RequestRecord(30, status=200),
    RequestRecord(35, status=200),
    RequestRecord(40, status=200),  # the last slice is closed: [30, 40]
]


def test_timeslices_skip_empty_slices() -> None:
    budgeting = Timeslices(slice=10, slice_target=0.75)
    result = evaluate(slo_for(AvailabilitySLI(), target=0.5, budgeting=budgeting), SLICED)
    assert [(s.start, s.end, s.good, s.bad, s.verdict) for s in result.slices] == [
        (0, 10, 3, 1, G),
        (10, 20, 1, 1, B),
        (20, 30, 0, 0, X),
        (30, 40, 3, 0, G),
    ]
    assert (result.good, result.bad, result.excluded) == (2, 1, 1)
    assert result.sli == pytest.approx(2 / 3)
    assert result.burn_rate == pytest.approx((1 / 3) / 0.5)
    # Record verdicts stay per record.
    assert result.verdicts().count(B) == 2


def test_timeslices_count_empty_slices_as_good() -> None:
    budgeting = Timeslices(slice=10, slice_target=0.75, empty_slices=EmptySlices.GOOD)
    result = evaluate(slo_for(AvailabilitySLI(), budgeting=budgeting), SLICED)
    assert [s.verdict for s in result.slices] == [G, B, G, G]
    assert result.sli == 0.75


def test_timeslices_slice_target_is_inclusive() -> None:
    strict = Timeslices(slice=10, slice_target=0.76)
    result = evaluate(slo_for(AvailabilitySLI(), budgeting=strict), SLICED)
    assert result.slices[0].verdict is B


def test_timeslices_with_excluded_records() -> None:
    records = [
        RequestRecord(0, status=200, latency_s=0.1),
        RequestRecord(1, status=503),  # excluded from latency
        RequestRecord(5, status=200, latency_s=2.0),
        RequestRecord(9, status=200, latency_s=0.1),
    ]
    budgeting = Timeslices(slice=5, slice_target=0.5)
    result = evaluate(slo_for(LatencySLI(threshold=1), budgeting=budgeting), records)
    # [0, 5): one event, good. [5, 9]: one good of two = 0.5 >= 0.5: good.
    assert [(s.good, s.bad, s.verdict) for s in result.slices] == [(1, 0, G), (1, 1, G)]


def test_a_span_that_is_a_whole_number_of_slices_up_to_rounding() -> None:
    records = [RequestRecord(0.1 * k, status=200) for k in range(31)]  # 0 .. 3.0000000000000004
    budgeting = Timeslices(slice=0.1, slice_target=1)
    result = evaluate(slo_for(AvailabilitySLI(), budgeting=budgeting), records)
    assert len(result.slices) == 30
    assert sum(s.total for s in result.slices) == 31


# ---- periods ------------------------------------------------------------------------------

ONE_PER_SECOND = [
    RequestRecord(float(t), status=503 if t in (5, 25, 95) else 200) for t in range(100)
]


def test_fixed_period_consumes_its_share_of_the_budget() -> None:
    result = evaluate(slo_for(AvailabilitySLI(), target=0.9, period=1000), ONE_PER_SECOND)
    assert result.period == 1000
    assert result.elapsed == 99
    assert result.elapsed_share == pytest.approx(0.099)
    assert result.error_ratio == 0.03
    assert result.burn_rate == pytest.approx(0.3)
    assert result.consumed == pytest.approx(0.3 * 0.099)
    assert result.remaining == pytest.approx(1 - 0.3 * 0.099)
    # remaining · T / BR
    assert result.time_to_exhaustion() == pytest.approx((1 - 0.3 * 0.099) * 1000 / 0.3)
    # The last 10 s: (89, 99] holds one bad request of ten: BR = 0.1 / 0.1 = 1.
    assert result.time_to_exhaustion(10) == pytest.approx((1 - 0.3 * 0.099) * 1000 / 1.0)


def test_period_shorter_than_the_records_rolls() -> None:
    result = evaluate(slo_for(AvailabilitySLI(), period=30), ONE_PER_SECOND)
    assert result.since == 69
    assert (result.total, result.bad) == (30, 1)  # (69, 99]: t=95 is the one bad
    assert result.elapsed_share == 1.0


def test_explicit_start_and_end() -> None:
    result = evaluate(slo_for(AvailabilitySLI()), ONE_PER_SECOND, start=10, end=30)
    assert (result.start, result.end, result.total, result.bad) == (10, 30, 21, 1)
    assert result.period == 20
    verdicts = result.verdicts()
    assert verdicts[:10] == [X] * 10
    assert verdicts[31:] == [X] * 69
    assert [r.timestamp for r in result.bad_records()] == [25]


def test_nothing_burns_and_no_events() -> None:
    good = [RequestRecord(float(t), status=200) for t in range(10)]
    result = evaluate(slo_for(AvailabilitySLI(), period=3600), good)
    assert result.burn_rate == 0.0
    assert result.time_to_exhaustion() is None
    empty = evaluate(slo_for(AvailabilitySLI()), [])
    assert (empty.total, empty.sli, empty.error_ratio, empty.burn_rate) == (0, None, None, None)
    assert (empty.consumed, empty.remaining, empty.met) == (0.0, 1.0, True)
    assert empty.time_to_exhaustion() is None


def test_met_at_exactly_the_target() -> None:
    records = [RequestRecord(float(t), status=500 if t == 0 else 200) for t in range(1000)]
    result = evaluate(slo_for(AvailabilitySLI(), target=0.999), records)
    assert result.sli == 0.999
    assert result.met
    assert result.consumed == 1.0
    assert result.remaining == 0.0


# ---- windows ------------------------------------------------------------------------------


def test_window_edges() -> None:
    result = evaluate(slo_for(AvailabilitySLI()), ONE_PER_SECOND)
    ten = result.window(10, at=20)
    assert (ten.since, ten.until, ten.total) == (10, 20, 10)  # (10, 20]: t=10 is out, t=20 in
    assert result.window(10, at=20.5).total == 10  # (10.5, 20.5]
    assert result.window(0.5, at=20).total == 1  # a record exactly at the right edge
    assert result.window(0.5, at=20.75).total == 0  # an empty window
    assert result.window(0.5, at=20.75).burn_rate is None
    assert result.window(100, at=5).total == 6  # reaches back past the start: t=0 counts
    assert result.window(5, at=5).total == 6  # ... also when it reaches exactly the start
    assert result.window(5, at=6).total == 5  # (1, 6]
    assert result.window(10, at=-1).total == 0
    assert result.window(10, at=500).total == 0  # after the end
    whole = result.window(result.end - result.start)
    assert (whole.total, whole.bad) == (result.total, result.bad)


def test_window_burn_rate() -> None:
    result = evaluate(slo_for(AvailabilitySLI(), target=0.9), ONE_PER_SECOND)
    window = result.window(10, at=30)  # (20, 30] holds t=25
    assert (window.good, window.bad, window.error_ratio) == (9, 1, 0.1)
    assert window.burn_rate == pytest.approx(1.0)


@pytest.mark.parametrize("length", [0, -1, float("nan"), float("inf")])
def test_window_length_must_be_positive(length: float) -> None:
    result = evaluate(slo_for(AvailabilitySLI()), ONE_PER_SECOND)
    with pytest.raises(EvaluationError):
        result.window(length)


def test_series_covers_every_record_once() -> None:
    result = evaluate(slo_for(AvailabilitySLI(), target=0.9), ONE_PER_SECOND)
    series = result.series(10)
    assert [p.until for p in series] == [10.0 * k for k in range(1, 11)]
    assert [p.total for p in series] == [11] + [10] * 8 + [9]  # [0,10], (10,20] ... (90,100]
    assert sum(p.total for p in series) == result.total
    assert [p.bad for p in series] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert series[0].burn_rate == pytest.approx((1 / 11) / 0.1)
    sliding = result.series(10, window=30)
    assert sliding[2].total == 31  # [0, 30]


def test_series_of_a_single_instant() -> None:
    result = evaluate(slo_for(AvailabilitySLI()), [RequestRecord(5, status=500)])
    (point,) = result.series(1)
    assert (point.until, point.total, point.bad) == (6, 1, 1)


# ---- record handling ----------------------------------------------------------------------


def test_unsorted_records_are_evaluated_in_time_order_and_answered_in_input_order() -> None:
    shuffled = [AVAILABILITY[i] for i in (9, 2, 0, 7, 4, 1, 6, 3, 8, 5)]
    records = RecordSet(shuffled)
    assert [records.input_index(i) for i in range(3)] == [2, 5, 1]  # t = 0, 1, 2
    result = evaluate(slo_for(AvailabilitySLI()), records)
    assert (result.good, result.bad) == (6, 4)
    assert result.verdicts() == [B, B, G, G, B, G, B, G, G, G]
    assert [r.timestamp for r in result.bad_records()] == [2, 4, 6, 9]


def test_a_record_set_is_reused_across_slos() -> None:
    records = RecordSet(LATENCY)
    assert len(records) == len(LATENCY)
    assert records[2] is LATENCY[2]
    latency = evaluate(slo_for(LatencySLI(threshold=0.5)), records)
    availability = evaluate(slo_for(AvailabilitySLI()), records)
    assert (latency.sli, availability.bad) == (0.5, 3)


def test_bad_spans_and_timestamps() -> None:
    with pytest.raises(EvaluationError, match="before start"):
        evaluate(slo_for(AvailabilitySLI()), ONE_PER_SECOND, start=10, end=5)
    with pytest.raises(EvaluationError, match="non-finite timestamp"):
        RecordSet([RequestRecord(0), RequestRecord(float("nan"))])
    with pytest.raises(EvaluationError, match="finite"):
        evaluate(slo_for(AvailabilitySLI()), ONE_PER_SECOND, end=float("inf"))


def test_record_properties() -> None:
    assert RequestRecord(0, status=200).succeeded
    assert not RequestRecord(0, status=200, error="stream").answered
    assert RequestRecord(0, status=404).answered
    assert not RequestRecord(0, status=404).succeeded
    assert not RequestRecord(0).answered


def test_to_dict_is_plain_data() -> None:
    summary = evaluate(slo_for(AvailabilitySLI()), AVAILABILITY).to_dict()
    assert summary["sli"] == 0.6
    assert summary["sli_kind"] == "availability"
    assert summary["budgeting"] == "occurrences"
    assert {type(v) for v in summary.values()} <= {str, int, float, bool, type(None)}


# ---- production extrapolation -------------------------------------------------------------


def test_extrapolate_occurrences_to_thirty_days() -> None:
    records = [RequestRecord(float(t), status=503 if t < 3 else 200) for t in range(60)]
    result = evaluate(slo_for(AvailabilitySLI(), target=0.999), records)
    cost = result.extrapolate(100)
    assert cost.period == 30 * 86400
    assert cost.budget_minutes == pytest.approx(43.2)  # 0.1% of 30 days
    assert cost.events_per_second == 100
    assert cost.budget_events == pytest.approx(259200)  # 0.001 · 100/s · 30 d
    assert cost.consumed == pytest.approx(3 / 259200)
    assert cost.cost_minutes == pytest.approx(3 / 100 / 60)  # 3 requests at 100/s
    assert cost.remaining == pytest.approx(1 - 3 / 259200)


def test_extrapolate_scales_by_the_share_of_requests_that_are_events() -> None:
    # Half the requests are not events of a TTFT SLI (not streamed).
    records = [
        RequestRecord(float(t), status=200, ttft_s=(0.5 if t == 0 else 0.1) if t % 2 == 0 else None)
        for t in range(100)
    ]
    result = evaluate(slo_for(TTFTSLI(threshold=0.3), target=0.99, period=7 * 86400), records)
    cost = result.extrapolate(10)
    assert cost.period == 7 * 86400
    assert cost.events_per_second == 5
    assert cost.consumed == pytest.approx(1 / (0.01 * 5 * 7 * 86400))


def test_extrapolate_timeslices_needs_no_rate() -> None:
    records = [RequestRecord(float(t), status=503 if t < 120 else 200) for t in range(600)]
    budgeting = Timeslices(slice=60, slice_target=0.99)
    result = evaluate(slo_for(AvailabilitySLI(), target=0.99, budgeting=budgeting), records)
    assert result.bad == 2
    cost = result.extrapolate(period=30 * 86400)
    assert cost.budget_events == pytest.approx(432)  # 1% of 43,200 one-minute slices
    assert cost.consumed == pytest.approx(2 / 432)
    assert cost.cost_minutes == pytest.approx(2)
    assert cost.events_per_second is None


def test_extrapolate_needs_a_rate_for_occurrences() -> None:
    result = evaluate(slo_for(AvailabilitySLI()), AVAILABILITY)
    with pytest.raises(EvaluationError, match="production_rps"):
        result.extrapolate()
    with pytest.raises(EvaluationError):
        result.extrapolate(0)


@pytest.mark.parametrize("rate", [10, 1000])
def test_the_breach_cost_is_the_time_breached_whatever_the_rate(rate: int) -> None:
    # One second of full outage in a minute, at 10/s or at 1000/s: the same second breached.
    records = [
        RequestRecord(i / rate, status=503 if 30 <= i / rate < 31 else 200)
        for i in range(60 * rate)
    ]
    result = evaluate(slo_for(AvailabilitySLI(), target=0.999), records, start=0.0, end=60.0)
    cost = result.breach_cost()
    assert cost is not None
    assert cost.breached == pytest.approx(1.0) and cost.period == 30 * 86400
    assert cost.budget_minutes == pytest.approx(43.2)
    assert cost.consumed == pytest.approx(1.0 / (0.001 * 30 * 86400))


def test_the_breach_cost_of_timeslices_is_their_bad_time_and_none_without_events() -> None:
    records = [RequestRecord(float(t), status=503 if t < 120 else 200) for t in range(600)]
    budgeting = Timeslices(slice=60, slice_target=0.99)
    result = evaluate(slo_for(AvailabilitySLI(), target=0.99, budgeting=budgeting), records,
                      start=0.0, end=600.0)  # fmt: skip
    cost = result.breach_cost()
    assert cost is not None and cost.breached == pytest.approx(120.0)  # 2 of 10 slices bad
    empty = evaluate(slo_for(AvailabilitySLI()), [], start=0.0, end=60.0)
    assert empty.breach_cost() is None
