"""Expectations as pure functions of what a run recorded: each rule passing and failing."""

from __future__ import annotations

from typing import Any

import pytest

from chaos import LoadRecord
from chaos._expect import Facts, Window, check, first_failure, time_to_detect, time_to_recover
from chaos._scenario import (
    BudgetCeiling,
    CanaryRollback,
    EventExpectation,
    FallbackShare,
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


def facts(
    records: list[LoadRecord],
    windows: dict[str, Window] | None = None,
    events: list[dict[str, Any]] | None = None,
    load_end: float = 20.0,
) -> Facts:
    slo = SLODocument.model_validate(
        {"name": "avail", "sli": {"kind": "availability"}, "target": 0.9, "period": "run"}
    ).to_slo()
    evaluations = {"avail": evaluate(slo, [r.to_slo() for r in records], start=0, end=load_end)}
    return Facts(records, windows or {}, events or [], evaluations, load_end)


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
    assert outcome.passed and outcome.measured == 1.0 and outcome.extra["fallback_after"] == 0
    lingering = every(0, 5) + every(5, 12, degraded=True) + every(12, 20)
    outcome = check(spec, facts(lingering, windows))
    assert not outcome.passed and outcome.extra["fallback_after"] == 10
    partial = every(0, 5) + every(5, 7, degraded=True) + every(7, 20)
    outcome = check(spec, facts(partial, windows))
    assert not outcome.passed and outcome.measured == pytest.approx(0.4)
    never = check(spec, facts(records, {}))
    assert not never.passed and never.detail == "the fault never ran"


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
    assert not none.passed and none.detail == "no canary_rollback event"


def test_event_presence_count_details_and_absence() -> None:
    events = [
        {"kind": "worker_restarted", "pool": "primary", "index": 0},
        {"kind": "worker_restarted", "pool": "canary", "index": 0},
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
    assert not empty.passed  # no requests prove nothing
