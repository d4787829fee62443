"""Expectations as pure functions of what a run recorded: each rule passing, failing, and
saying `no data` when it has nothing to judge (which fails unless the entry allows it)."""

from __future__ import annotations

from typing import Any

import pytest

from chaos import Judgement, LoadRecord
from chaos._expect import (
    Facts,
    RequestOutcome,
    Window,
    check,
    classify,
    first_failure,
    time_to_alert,
    time_to_detect,
    time_to_recover,
)
from chaos._scenario import (
    BudgetCeiling,
    BurnRateAbort,
    CanaryRollback,
    EventExpectation,
    FallbackShare,
    MetricExpectation,
    Recovery,
    SLOMet,
    StatusShare,
)
from slo import SLODocument, evaluate


def rec(t: float, status: int | None = 200, *, degraded: bool = False, error: str | None = None):
    return LoadRecord(
        index=int(t * 10), scheduled=t, sent=t, end=t + 0.05, status=status, error=error,
        degraded=degraded,
    )  # fmt: skip


def every(start: float, end: float, **kwargs: Any) -> list[LoadRecord]:
    """One request each 0.1 s in [start, end)."""
    return [rec(round(start + i / 10, 3), **kwargs) for i in range(round((end - start) * 10))]


def slo(name: str, sli: dict[str, Any], target: float, period: str = "run") -> Any:
    return SLODocument.model_validate(
        {"name": name, "sli": sli, "target": target, "period": period}
    ).to_slo()


SLOS = [
    slo("avail", {"kind": "availability"}, 0.9),
    slo("avail-30d", {"kind": "availability"}, 0.999, "30d"),
    slo("ttft", {"kind": "ttft", "threshold": "500ms"}, 0.9),
    slo("fast", {"kind": "latency", "threshold": "1s"}, 0.9),
]


def facts(
    records: list[LoadRecord],
    windows: dict[str, Window] | None = None,
    events: list[dict[str, Any]] | None = None,
    load_end: float = 20.0,
) -> Facts:
    slo_records = [r.to_slo() for r in records]
    evaluations = {s.name: evaluate(s, slo_records, start=0, end=load_end) for s in SLOS}
    return Facts(records, windows or {}, events or [], evaluations, load_end)


def test_one_classifier_decides_every_outcome() -> None:
    assert classify(rec(1)) is RequestOutcome.OK
    assert classify(rec(1, degraded=True)) is RequestOutcome.DEGRADED
    assert classify(rec(1, 429)) is RequestOutcome.SHED
    assert classify(rec(1, 503)) is RequestOutcome.FAILED
    assert classify(rec(1, 404)) is RequestOutcome.FAILED
    assert classify(rec(1, None, error="timeout")) is RequestOutcome.FAILED
    assert classify(rec(1, 200, error="malformed")) is RequestOutcome.FAILED


def test_time_to_recover_is_measured_from_the_fault_end_to_the_last_bad_request() -> None:
    records = every(0, 5) + every(5, 7, status=503) + every(7, 20)
    assert time_to_recover(records, 5.0, 20.0, 2.0) == pytest.approx(2.0)
    assert time_to_recover(every(0, 20), 5.0, 20.0, 2.0) == 0.0
    # Still failing at the end, or good for less than the window before the load ended.
    assert time_to_recover(every(0, 20, status=500), 5.0, 20.0, 2.0) is None
    assert time_to_recover(every(5, 19.5, status=500) + every(19.5, 20), 5.0, 20.0, 2.0) is None


def test_time_to_detect_and_first_failure() -> None:
    events = [
        {"kind": "worker_restarted", "t": 6.0},  # not a reaction
        {"kind": "replica_down", "t": 4.0},  # before the fault
        {"kind": "replica_down", "t": 5.3},
        {"kind": "fallback_on", "t": None},
    ]
    assert time_to_detect(events, 5.0) == pytest.approx(0.3)
    assert time_to_detect(events[:2], 5.0) is None
    # What the fault's own action causes is not a detection (a restart to reload a model).
    restarted = [{"kind": "worker_exited", "t": 5.1}, {"kind": "model_load_refused", "t": 5.9}]
    assert time_to_detect(restarted, 5.0) == pytest.approx(0.1)
    assert time_to_detect(restarted, 5.0, ignore=frozenset({"worker_exited"})) == (
        pytest.approx(0.9)
    )
    records = [*every(0, 5), rec(5.5, 503), *every(5.6, 10)]
    assert first_failure(records, 5.0) == pytest.approx(0.5)
    assert first_failure(every(0, 10), 5.0) is None


def test_slo_met_and_budget_ceiling() -> None:
    ok = facts(every(0, 19) + every(19, 20, status=500))  # 5% bad, budget 10%
    met = check(SLOMet(kind="slo_met", slo="avail"), ok)
    assert met.passed and met.measured == pytest.approx(0.95) and met.bound == 0.9
    ceiling = check(BudgetCeiling(kind="budget", slo="avail", max_consumed=0.4), ok)
    assert not ceiling.passed and ceiling.measured == pytest.approx(0.5)
    assert check(BudgetCeiling(kind="budget", slo="avail", max_consumed=0.5), ok).passed
    bad = facts(every(0, 15) + every(15, 20, status=500))
    assert not check(SLOMet(kind="slo_met", slo="avail"), bad).passed
    missed = check(SLOMet(kind="slo_met", slo="avail", met=False), bad)
    assert missed.passed and missed.description == "SLO avail missed (SLI < 0.9)"
    assert not check(SLOMet(kind="slo_met", slo="avail", met=False), ok).passed


def test_recovery_uses_the_last_fault_window() -> None:
    records = every(0, 5) + every(5, 9, degraded=True) + every(9, 20)
    windows = {"a": Window(2.0, 3.0), "b": Window(5.0, 8.0)}
    outcome = check(Recovery(kind="recovery", within=2.0), facts(records, windows))
    assert outcome.passed and outcome.measured == pytest.approx(1.0)
    late = check(Recovery(kind="recovery", within=0.5), facts(records, windows))
    assert not late.passed and "all requests good from 9.00s" in late.detail
    # A kill has no duration: its window ends when it was applied.
    kill = {"k": Window(5.0, None)}
    assert check(Recovery(kind="recovery", within=5.0), facts(records, kill)).measured == (
        pytest.approx(4.0)
    )


def test_fallback_share_during_and_none_after() -> None:
    records = every(0, 5) + every(5, 10, degraded=True) + every(10, 20)
    windows = {"cut": Window(5.0, 10.0)}
    spec = FallbackShare(kind="fallback", during="cut", min_share=0.9, none_after=1.0)
    outcome = check(spec, facts(records, windows))
    assert outcome.passed and outcome.measured == 1.0 and outcome.fallback_after == 0
    assert str(outcome.evidence) == "140 requests"  # 50 in the window, 90 from 11 s on
    lingering = every(0, 5) + every(5, 12, degraded=True) + every(12, 20)
    outcome = check(spec, facts(lingering, windows))
    assert not outcome.passed and outcome.fallback_after == 10
    partial = every(0, 5) + every(5, 7, degraded=True) + every(7, 20)
    outcome = check(spec, facts(partial, windows))
    assert not outcome.passed and outcome.measured == pytest.approx(0.4)
    never = check(spec, facts(records, {}))
    assert never.judgement is Judgement.NO_DATA and not never.passed
    assert never.detail == "cut never applied"


def test_canary_rollback_within_bound_after_a_fault() -> None:
    windows = {"bad": Window(4.0, None)}
    events = [{"kind": "canary_rollback", "t": 9.5}]
    spec = CanaryRollback(kind="canary_rollback", within=10.0, after="bad")
    outcome = check(spec, facts(every(0, 20), windows, events))
    assert outcome.passed and outcome.measured == pytest.approx(5.5)
    assert not check(
        CanaryRollback(kind="canary_rollback", within=5.0, after="bad"),
        facts(every(0, 20), windows, events),
    ).passed
    none = check(spec, facts(every(0, 20), windows, []))
    assert none.judgement is Judgement.NOT_MET and "no canary_rollback" in none.detail


def test_event_presence_count_details_and_absence() -> None:
    events = [
        {"kind": "worker_restarted", "pool": "primary", "index": 0, "t": 3.0},
        {"kind": "worker_restarted", "pool": "canary", "index": 0, "t": 4.0},
    ]
    f = facts(every(0, 20), events=events)
    assert check(EventExpectation(kind="event", event="worker_restarted", min_count=2), f).passed
    assert not check(
        EventExpectation(kind="event", event="worker_restarted", min_count=3), f
    ).passed
    assert check(
        EventExpectation(kind="event", event="worker_restarted", details={"pool": "canary"}), f
    ).passed
    assert not check(
        EventExpectation(kind="event", event="worker_restarted", details={"pool": "fallback"}), f
    ).passed
    absent = check(EventExpectation(kind="event", event="worker_restarted", present=False), f)
    assert not absent.passed and absent.measured == 2


def test_status_share_overall_and_in_a_window() -> None:
    records = (
        every(0, 10)
        + every(10, 12, status=429)
        + every(12, 19)
        + [rec(19.5, None, error="ReadTimeout")]
    )
    f = facts(records, {"spike": Window(10.0, 14.0)})
    overall = check(StatusShare(kind="status", status="429", max_share=0.05), f)
    assert not overall.passed and overall.measured == pytest.approx(20 / 191)
    during = check(StatusShare(kind="status", status="4xx", min_share=0.5, during="spike"), f)
    assert during.passed and during.measured == pytest.approx(0.5)
    errors = check(StatusShare(kind="status", status="error", max_share=0.01), f)
    assert errors.passed and errors.measured == pytest.approx(1 / 191)
    assert not check(StatusShare(kind="status", status="2xx", min_share=1.0), f).passed
    empty = check(StatusShare(kind="status", status="2xx", min_share=0.5), facts([]))
    assert empty.judgement is Judgement.NO_DATA and not empty.passed  # nothing proves nothing


# -- the evidence rule: each case passed on the harness before it existed ----------------------


def test_an_slo_with_zero_events_is_no_data_and_fails() -> None:
    # Non-streamed load: no request has a time to first token, so the TTFT SLO has no event.
    unstreamed = facts(every(0, 20))
    ttft = check(SLOMet(kind="slo_met", slo="ttft"), unstreamed)
    assert ttft.judgement is Judgement.NO_DATA and not ttft.passed
    assert str(ttft.evidence) == "0 events"
    # Every request failed: a latency SLO excludes failures, so it too judged nothing.
    all_failed = facts(every(0, 20, status=None, error="connect"))
    latency = check(SLOMet(kind="slo_met", slo="fast"), all_failed)
    assert latency.judgement is Judgement.NO_DATA and not latency.passed
    allowed = check(SLOMet(kind="slo_met", slo="ttft", allow_no_data=True), unstreamed)
    assert allowed.judgement is Judgement.NO_DATA and allowed.passed


def test_budget_compares_the_runs_budget_not_the_30_day_share() -> None:
    every_one_failed = facts(every(0, 19.2, status=503))  # 192 of 192
    spec = BudgetCeiling(kind="budget", slo="avail-30d", max_consumed=1.0)
    outcome = check(spec, every_one_failed)
    # All bad against a 0.1% budget: 1000 budgets' worth, not the 0.009 of 30 days it was.
    assert not outcome.passed and outcome.measured == pytest.approx(1000)
    assert str(outcome.evidence) == "192 events"
    half_a_budget = facts(every(0, 19.9) + every(19.9, 20, status=500))  # 1 of 200 bad
    assert check(BudgetCeiling(kind="budget", slo="avail-30d", max_consumed=5.0),
                 half_a_budget).measured == pytest.approx(5.0)  # fmt: skip


def test_recovery_without_a_fault_or_a_request_after_it_is_no_data() -> None:
    unfaulted = check(Recovery(kind="recovery", within=5.0), facts(every(0, 20)))
    assert unfaulted.judgement is Judgement.NO_DATA and not unfaulted.passed
    windows = {"late": Window(19.5, 19.9)}
    after_the_last = check(Recovery(kind="recovery", within=5.0), facts(every(0, 19), windows))
    assert after_the_last.judgement is Judgement.NO_DATA and not after_the_last.passed


def test_fallback_none_after_without_a_request_after_is_no_data() -> None:
    records = every(0, 5) + every(5, 10, degraded=True)  # nothing after the window
    spec = FallbackShare(kind="fallback", during="cut", min_share=0.9, none_after=1.0)
    outcome = check(spec, facts(records, {"cut": Window(5.0, 10.0)}))
    assert outcome.judgement is Judgement.NO_DATA and not outcome.passed
    empty_window = check(
        FallbackShare(kind="fallback", during="cut", min_share=0.5),
        facts(every(0, 5), {"cut": Window(5.0, 10.0)}),
    )
    assert empty_window.judgement is Judgement.NO_DATA and not empty_window.passed


def test_canary_rollback_after_a_fault_that_never_applied_is_no_data() -> None:
    events = [{"kind": "canary_rollback", "t": 1.0}]  # would count from t = 0
    spec = CanaryRollback(kind="canary_rollback", within=10.0, after="bad")
    outcome = check(spec, facts(every(0, 20), {}, events))
    assert outcome.judgement is Judgement.NO_DATA and not outcome.passed


def test_events_from_before_the_load_started_do_not_count() -> None:
    start_up = [{"kind": "replica_up", "pool": "primary", "index": i, "t": -3.0} for i in (0, 1)]
    spec = EventExpectation(kind="event", event="replica_up")
    outcome = check(spec, facts(every(0, 20), events=start_up))
    assert not outcome.passed and outcome.measured == 0
    during = [*start_up, {"kind": "replica_up", "pool": "primary", "index": 0, "t": 7.0}]
    assert check(spec, facts(every(0, 20), events=during)).passed


def test_time_to_alert_replays_the_burn_rate_rule_as_the_live_check_saw_it() -> None:
    avail = slo("avail", {"kind": "availability"}, 0.99)  # budget 1%: 10× burns at 10% bad
    rule = BurnRateAbort(kind="burn_rate", slo="avail", above=10.0, window=1.0, min_requests=5)
    # Good until 5 s, then every request fails (answered 50 ms after it was scheduled).
    records = every(0, 5) + every(5, 10, status=503)
    alert = time_to_alert(records, avail, rule, started=5.0, end=10.0, timeout=10.0)
    # At 5.25 s three of the ten requests of the last second were answered 503: 30% > 10%.
    assert alert == pytest.approx(0.25)
    healthy = time_to_alert(every(0, 10), avail, rule, started=5.0, end=10.0, timeout=10.0)
    assert healthy is None


def test_a_hang_alerts_on_unanswered_requests_past_the_threshold() -> None:
    fast = slo("fast", {"kind": "latency", "threshold": "500ms"}, 0.9)
    rule = BurnRateAbort(kind="burn_rate", slo="fast", above=2.0, window=2.0, min_requests=5)
    # From 5 s on nothing is answered (no end): no finished request says so, the pending do.
    hung = [LoadRecord(index=i, scheduled=5 + i / 10, sent=5 + i / 10) for i in range(50)]
    alert = time_to_alert(every(0, 5) + hung, fast, rule, started=5.0, end=10.0, timeout=10.0)
    assert alert is not None and 0.5 < alert < 2.0


def test_a_metric_statistic_over_the_load_a_window_and_after_it() -> None:
    # A queue scraped every 0.5 s: 0 before the fault, 6 and 9 in it, back to 1 and 0 after.
    queue = [(0.0, 0.0), (0.5, 0.0), (1.0, 6.0), (1.5, None), (2.0, 9.0), (2.5, 1.0), (3.0, 0.0)]
    known = Facts([], {"slow": Window(1.0, 2.5)}, [], {}, 3.5, {"queue": queue})

    def judge(**spec: Any) -> Any:
        return check(MetricExpectation.model_validate({"kind": "metric", "series": "queue",
                                                       **spec}), known)  # fmt: skip

    peak = judge(at_most=8, during="slow")
    assert (peak.judgement, peak.measured, peak.bound) == (Judgement.NOT_MET, 9.0, 8.0)
    assert str(peak.evidence) == "2 samples"  # the scrape without a value is not one
    assert peak.detail == "2 samples of 3 scrapes from 1.00s"
    after = judge(stat="last", at_most=0, after="slow")
    assert after.passed and after.measured == 0.0 and after.evidence.count == 2
    mean = judge(stat="mean", at_least=2, at_most=3)
    assert mean.passed and mean.measured == pytest.approx(16 / 6)
    assert judge(stat="min", at_least=0).description == "min of queue ≥ 0"
    never = check(MetricExpectation.model_validate(
        {"kind": "metric", "series": "queue", "at_most": 1, "during": "slow"}
    ), Facts([], {}, [], {}, 3.5, {"queue": queue}))  # fmt: skip
    assert never.judgement is Judgement.NO_DATA and not never.passed
    assert never.detail == "slow never applied"
    empty = check(MetricExpectation.model_validate(
        {"kind": "metric", "series": "queue", "at_most": 1, "allow_no_data": True}
    ), Facts([], {}, [], {}, 3.5, {"queue": [(0.0, None)]}))  # fmt: skip
    assert empty.judgement is Judgement.NO_DATA and empty.passed
