"""Multi-window, multi-burn-rate alerts: factors, scaling, and a hand-computed timeline."""

from __future__ import annotations

import pytest

from slo import (
    DEFAULT_RULES,
    SLO,
    AvailabilitySLI,
    BurnRateRule,
    EvaluationError,
    PeriodKind,
    RequestRecord,
    Severity,
    Timeslices,
    default_rules,
    evaluate,
)

DAY = 86400.0
THIRTY_DAYS = 30 * DAY


def test_default_burn_factors_for_thirty_days_are_exact() -> None:
    factors = [rule.factor(THIRTY_DAYS) for rule in DEFAULT_RULES]
    assert factors == [14.4, 6.0, 1.0]
    assert [(r.severity, r.budget_percent) for r in DEFAULT_RULES] == [
        (Severity.PAGE, 2),
        (Severity.PAGE, 5),
        (Severity.TICKET, 10),
    ]
    windows = [(r.long_window, r.short_window) for r in DEFAULT_RULES]
    assert windows == [(3600, 300), (6 * 3600, 1800), (3 * DAY, 6 * 3600)]
    assert default_rules(THIRTY_DAYS) == DEFAULT_RULES


@pytest.mark.parametrize("period", [DAY, 7 * DAY, 28 * DAY, 90 * DAY, 60.0, 0.5])
def test_rules_scale_to_any_period_with_the_same_factors(period: float) -> None:
    scaled = default_rules(period)
    for rule, original in zip(scaled, DEFAULT_RULES, strict=True):
        assert rule.factor(period) == pytest.approx(original.factor(THIRTY_DAYS), rel=1e-12)
        assert rule.long_window == pytest.approx(original.long_window * period / THIRTY_DAYS)
        assert rule.short_window == pytest.approx(original.short_window * period / THIRTY_DAYS)


def test_one_day_windows() -> None:
    page_fast = default_rules(DAY)[0]
    assert (page_fast.long_window, page_fast.short_window) == (120, 10)


def test_factor_is_budget_share_times_period_over_long_window() -> None:
    rule = BurnRateRule(
        name="x", severity=Severity.PAGE, budget_percent=50, long_window=10, short_window=1
    )
    assert rule.factor(100) == 5.0  # half the budget in a tenth of the period


# A day of one request every 10 s; from 6h every request fails for 30 minutes.
FAULT_START = 6 * 3600.0
FAULT_END = 6.5 * 3600.0
TIMELINE = [
    RequestRecord(10.0 * k, status=503 if FAULT_START <= 10.0 * k < FAULT_END else 200)
    for k in range(8641)
]
SLO_30D = SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=THIRTY_DAYS)


def test_hand_computed_timeline_with_the_default_rules() -> None:
    result = evaluate(SLO_30D, TIMELINE)
    page_fast, page_slow, ticket = result.alerts()  # evaluated every 60 s (5m / 5)
    # page-fast, F = 14.4: the error ratio must pass 1.44%. At 6h01 the 1h window holds
    # 7 bad of 360 (1.9%) and the 5m window 7 of 30. It clears at 6h35, when the 5m window
    # (6h30, 6h35] holds no failure any more.
    assert [(i.fired_at, i.cleared_at) for i in page_fast.intervals] == [(21660, 23700)]
    assert page_fast.time_to_detect(FAULT_START) == 60
    # page-slow, F = 6: 0.6% of the 2,160 requests in 6h is 12.96: the 13th failure, at
    # 6h02, fires it; it clears once the 30m window has no failures left (7h00).
    assert [(i.fired_at, i.cleared_at) for i in page_slow.intervals] == [(21720, 25200)]
    assert page_slow.time_to_detect(FAULT_START) == 120
    # ticket, F = 1: the 3d window reaches back to the start (2,167 requests, 7 bad at
    # 6h01); the 6h window needs at least 3 failures, which it holds until 12h30.
    assert [(i.fired_at, i.cleared_at) for i in ticket.intervals] == [(21660, 45000)]
    assert [a.factor for a in (page_fast, page_slow, ticket)] == [14.4, 6.0, 1.0]
    assert page_fast.fired
    assert page_fast.firing_at(22000)
    assert not page_fast.firing_at(23700)
    assert page_fast.time_to_detect(FAULT_END) is None


def test_step_changes_the_instants_alerts_are_seen_at() -> None:
    page_fast = evaluate(SLO_30D, TIMELINE).alerts(step=10)[0]
    # With a 10 s step: 1h window needs > 5.184 bad → the 6th failure at 6h00m50s.
    assert page_fast.intervals[0].fired_at == 21650
    assert page_fast.time_to_detect(FAULT_START) == 50


def test_step_that_does_not_divide_the_windows() -> None:
    page_fast = evaluate(SLO_30D, TIMELINE).alerts(step=7)[0]
    fired = page_fast.intervals[0].fired_at
    # The first grid instant (a multiple of 7 s) at or after the 6th failure at 21650 s.
    assert fired == 21651
    # The 5m window holds the last failure (23390 s) until 23690 s: 3385 · 7 = 23695.
    assert page_fast.intervals[0].cleared_at == 23695


def test_no_failures_no_alerts() -> None:
    quiet = [RequestRecord(10.0 * k, status=200) for k in range(1000)]
    assert not any(a.fired for a in evaluate(SLO_30D, quiet).alerts())


def test_empty_windows_do_not_burn() -> None:
    # Failures, then a long silence. From t=14 the 5 s window is empty (9, 14]: it does not
    # burn, however bad the 60 s window is, and nothing fires again in the silence.
    records = [RequestRecord(float(t), status=503) for t in range(10)]
    records.append(RequestRecord(10_000.0, status=200))
    rule = BurnRateRule(
        name="x", severity=Severity.PAGE, budget_percent=2, long_window=60, short_window=5
    )
    (alert,) = evaluate(SLO_30D, records).alerts([rule], step=1)
    assert [(i.fired_at, i.cleared_at) for i in alert.intervals] == [(0, 14)]


def test_still_firing_at_the_end() -> None:
    records = [RequestRecord(float(t), status=503) for t in range(100)]
    (alert,) = evaluate(SLO_30D, records).alerts(DEFAULT_RULES[:1], step=60)
    assert [(i.fired_at, i.cleared_at) for i in alert.intervals] == [(0, None)]
    assert alert.firing_at(10**9)


def test_rules_from_the_slo_file_are_used_as_written() -> None:
    rule = BurnRateRule(
        name="mine", severity=Severity.TICKET, budget_percent=10, long_window=600, short_window=60
    )
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=THIRTY_DAYS, alerts=(rule,))
    (alert,) = evaluate(slo, TIMELINE).alerts()
    assert alert.rule == rule
    assert alert.factor == pytest.approx(0.1 * THIRTY_DAYS / 600)
    none = SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=THIRTY_DAYS, alerts=())
    assert evaluate(none, TIMELINE).alerts() == ()


def test_period_run_scales_the_default_rules_to_the_span() -> None:
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=PeriodKind.RUN)
    alerts = evaluate(slo, TIMELINE).alerts()
    assert [a.rule.long_window for a in alerts] == pytest.approx([120, 720, 8640])
    assert [a.factor for a in alerts] == pytest.approx([14.4, 6, 1])
    assert all(a.fired for a in alerts)


def test_timeslice_budgeting_alerts_on_slices() -> None:
    budgeting = Timeslices(slice=60, slice_target=0.99)
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.99, period=THIRTY_DAYS, budgeting=budgeting)
    (page_fast,) = evaluate(slo, TIMELINE).alerts(DEFAULT_RULES[:1])
    # B = 1%, so both windows need more than 14.4% bad slices. Slices count at their end:
    # the 5m window passes with the first bad slice (1 of 5, at 6h01); the 1h window needs
    # 9 of 60, at 6h09.
    assert page_fast.intervals[0].fired_at == FAULT_START + 9 * 60


def test_alerts_need_a_period() -> None:
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.9, period=PeriodKind.RUN)
    with pytest.raises(EvaluationError, match="period longer than zero"):
        evaluate(slo, [RequestRecord(1.0, status=200)]).alerts()
    with pytest.raises(EvaluationError):
        evaluate(SLO_30D, TIMELINE).alerts(step=0)


def _exactly_at_factor_rule() -> BurnRateRule:
    # Over a 20 s period, half the budget in 10 s: F = 50% · 20 / 10 = 1.
    return BurnRateRule(
        name="edge", severity=Severity.PAGE, budget_percent=50, long_window=10, short_window=2
    )


@pytest.mark.parametrize(
    "good_before", [95, 5]
)  # few or many instants where the short window burns
def test_a_burn_rate_exactly_at_the_factor_does_not_fire(good_before: int) -> None:
    # Target 0.5: B = 0.5. The last 10 s hold 5 failures of 10: BR = 0.5 / 0.5 = 1 = F,
    # while the short window (2 of 2 failing, BR 2) is above it. Not above F: no alert.
    records = [RequestRecord(float(t), status=200) for t in range(good_before)]
    records += [RequestRecord(float(good_before + t), status=503) for t in range(5)]
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.5, period=20)
    result = evaluate(slo, records, start=0)
    rule = _exactly_at_factor_rule()
    assert result.window(10).burn_rate == rule.factor(20) == 1.0
    (alert,) = result.alerts([rule], step=1)
    assert not alert.fired
