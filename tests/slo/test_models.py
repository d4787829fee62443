"""The typed model, built from Python."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from slo import (
    DEFAULT_BAD,
    SLO,
    AvailabilitySLI,
    BudgetingMethod,
    FailurePolicy,
    LatencySLI,
    Occurrences,
    PeriodKind,
    StatusPattern,
    Timeslices,
)
from slo._models import complement, percent_to_fraction


def test_defaults() -> None:
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=2592000.0)
    assert slo.budgeting == Occurrences()
    assert AvailabilitySLI().bad == DEFAULT_BAD
    assert [str(p) for p in DEFAULT_BAD] == ["5xx", "429", "error"]
    assert LatencySLI(threshold=0.5).failures is FailurePolicy.EXCLUDE


def test_budget_is_the_decimal_complement() -> None:
    assert SLO(name="a", sli=AvailabilitySLI(), target=0.999, period=PeriodKind.RUN).budget == 0.001
    assert complement(0.99) == 0.01
    assert complement(0.0) == 1.0
    assert 1 - 0.999 != 0.001  # the reason complement() exists


def test_percent_to_fraction_is_exact() -> None:
    assert percent_to_fraction(99.9) == 0.999
    assert 99.9 / 100 != 0.999  # the reason percent_to_fraction() exists
    assert percent_to_fraction(95) == 0.95


@pytest.mark.parametrize("target", [1.0, 1.5, -0.1])
def test_target_range(target: float) -> None:
    with pytest.raises(ValidationError, match="target"):
        SLO(name="a", sli=AvailabilitySLI(), target=target, period=PeriodKind.RUN)


def test_period_run_and_durations() -> None:
    run = SLO(name="a", sli=AvailabilitySLI(), target=0.9, period=PeriodKind.RUN)
    assert run.period is PeriodKind.RUN
    assert run.period_seconds(42.0) == 42.0
    fixed = SLO(name="a", sli=AvailabilitySLI(), target=0.9, period=3600)
    assert fixed.period_seconds(42.0) == 3600.0
    # Python callers may write durations as strings too, as in a file.
    assert SLO(name="a", sli=AvailabilitySLI(), target=0.9, period="1h").period == 3600  # type: ignore[arg-type]
    assert SLO(name="a", sli=AvailabilitySLI(), target=0.9, period="run").period is PeriodKind.RUN  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="longer than zero"):
        SLO(name="a", sli=AvailabilitySLI(), target=0.9, period=0)


def test_models_are_frozen_and_reject_unknown_fields() -> None:
    slo = SLO(name="a", sli=AvailabilitySLI(), target=0.9, period=PeriodKind.RUN)
    with pytest.raises(ValidationError):
        slo.target = 0.5
    with pytest.raises(ValidationError, match="Extra inputs"):
        LatencySLI(threshold=1, colour="red")  # type: ignore[call-arg]


def test_timeslices_fields() -> None:
    budgeting = Timeslices(slice="1m", slice_target=0.95)  # type: ignore[arg-type]
    assert budgeting.method is BudgetingMethod.TIMESLICES
    assert budgeting.slice == 60.0
    with pytest.raises(ValidationError):
        Timeslices(slice=60, slice_target=0)
    with pytest.raises(ValidationError):
        Timeslices(slice=60, slice_target=1.01)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("5xx", [500, 503, 599], [200, 429, 499, None]),
        ("429", [429], [428, 500, None]),
        ("error", [None], [200, 500]),
        ("4xx", [400, 404, 429], [500, None]),
    ],
)
def test_status_patterns(pattern: str, matches: list[int | None], misses: list[int | None]) -> None:
    parsed = StatusPattern.parse(pattern)
    assert str(parsed) == pattern
    assert all(parsed.matches(s) for s in matches)
    assert not any(parsed.matches(s) for s in misses)


@pytest.mark.parametrize("bad", ["6xx", "0xx", "99", "600", "oops", 4.5, True])
def test_status_patterns_reject(bad: object) -> None:
    with pytest.raises(ValueError, match="status"):
        StatusPattern.parse(bad)


def test_status_pattern_from_int_and_dump() -> None:
    sli = AvailabilitySLI(bad=["5xx", 429, "error"])  # type: ignore[arg-type]
    assert sli.model_dump(mode="json")["bad"] == ["5xx", "429", "error"]
    with pytest.raises(ValidationError):
        AvailabilitySLI(bad=())


def test_slo_round_trips_through_json_dump() -> None:
    slo = SLO(
        name="a",
        sli=LatencySLI(threshold=0.25, failures=FailurePolicy.BAD),
        target=0.99,
        period=7 * 86400,
        budgeting=Timeslices(slice=300, slice_target=0.9),
    )
    dumped = slo.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["sli"]["threshold"] == "250ms"
    assert dumped["period"] == "7d"
    assert dumped["budgeting"]["sliceTarget"] == 0.9
    assert SLO.model_validate(dumped, context={"file": True}) == slo
