"""SLO files: parsed into typed models; every error names the file, the line and the field."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

import slo as slo_package
from slo import (
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    DegradedSLI,
    EmptySlices,
    FailurePolicy,
    LatencySLI,
    Op,
    PeriodKind,
    Severity,
    SLOFileError,
    StatusPattern,
    Timeslices,
    load_slo,
    load_slos,
    parse_slo,
    parse_slos,
)

EXAMPLES = Path(slo_package.__file__).parent / "examples"


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(SLOFileError) as caught:
        parse_slos(textwrap.dedent(text), source="my.yaml")
    assert all(p.file == "my.yaml" for p in caught.value.problems)
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_every_sli_kind_and_budgeting_method() -> None:
    slos = parse_slos(
        textwrap.dedent(
            """\
            name: availability
            sli: {kind: availability, bad: [5xx, error]}
            targetPercent: 99.5
            period: 30d
            ---
            name: latency
            sli: {kind: latency, threshold: 500ms, op: lt, failures: bad}
            target: 0.99
            period: 7d
            budgeting: {method: timeslices, slice: 1m, sliceTarget: 0.9, emptySlices: good}
            ---
            name: ttft
            sli: {kind: ttft, threshold: 300ms}
            target: 0.95
            period: run
            ---
            name: degraded
            sli: {kind: degraded}
            target: 0.98
            period: 1h30m
            alerts: []
            """
        )
    )
    availability, latency, ttft, degraded = slos
    assert availability.sli == AvailabilitySLI(bad=(StatusPattern(status_class=5), StatusPattern()))
    assert availability.target == 0.995
    assert availability.period == 30 * 86400
    assert latency.sli == LatencySLI(threshold=0.5, op=Op.LT, failures=FailurePolicy.BAD)
    assert latency.budgeting == Timeslices(
        slice=60, slice_target=0.9, empty_slices=EmptySlices.GOOD
    )
    assert ttft.sli == TTFTSLI(threshold=0.3)
    assert ttft.period is PeriodKind.RUN
    assert degraded.sli == DegradedSLI()
    assert degraded.period == 5400
    assert degraded.alerts == ()
    assert degraded.alert_rules(5400) == ()


def test_alert_rules_in_a_file() -> None:
    slo = parse_slo(
        """
        name: a
        sli: {kind: availability}
        target: 0.9
        period: run
        alerts:
          - {name: quick, severity: page, budgetPercent: 2, longWindow: 10s, shortWindow: 1s}
        """
    )
    assert slo.alerts is not None
    (rule,) = slo.alerts
    assert (rule.name, rule.severity, rule.long_window, rule.short_window) == (
        "quick",
        Severity.PAGE,
        10.0,
        1.0,
    )
    assert slo.alert_rules(1234.0) == slo.alerts


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_load(path: Path) -> None:
    loaded = load_slo(path)
    assert isinstance(loaded, SLO)
    assert loaded.name.startswith("chat-")


def test_load_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "slos.yaml"
    path.write_text("name: a\nsli: {kind: degraded}\ntarget: 0.9\nperiod: 1d\n")
    assert load_slos(path)[0].name == "a"
    assert load_slo(str(path)).period == 86400


def test_unknown_field_names_line_and_field() -> None:
    found = problems(
        """\
        name: a
        sli:
          kind: latency
          threshold: 500ms
          colour: red
        target: 0.9
        period: 30d
        """
    )
    assert found == [(5, "sli.colour", "unknown field")]


def test_every_problem_is_reported_with_its_own_line() -> None:
    found = problems(
        """\
        name: a
        sli:
          kind: latency
          threshold: 500
        target: 0.9
        period: 3 days
        """
    )
    assert [(line, field) for line, field, _ in found] == [(4, "sli.threshold"), (6, "period")]
    assert "needs a unit" in found[0][2]
    assert "invalid duration '3 days'" in found[1][2]


def test_missing_field_points_at_its_parent() -> None:
    assert problems("name: a\nsli:\n  kind: latency\ntarget: 0.9\nperiod: 1d\n") == [
        (2, "sli.threshold", "required field is missing")
    ]


def test_unknown_discriminator_lists_the_choices() -> None:
    found = problems("name: a\nsli:\n  kind: speed\ntarget: 0.9\nperiod: 1d\n")
    assert found[0][:2] == (3, "sli.kind")
    assert "expected one of: availability, latency, ttft, itl, degraded" in found[0][2]


def test_missing_discriminator() -> None:
    found = problems("name: a\nsli: {}\ntarget: 0.9\nperiod: 1d\n")
    assert found == [(2, "sli.kind", "required field is missing")]


def test_nested_list_items_are_located() -> None:
    found = problems(
        """\
        name: a
        sli:
          kind: availability
          bad:
            - 5xx
            - 6xx
        target: 0.9
        period: 1d
        alerts:
          - name: x
            severity: sms
            budgetPercent: 2
            longWindow: 1h
            shortWindow: 5m
        """
    )
    assert [(line, field) for line, field, _ in found] == [
        (6, "sli.bad[1]"),
        (11, "alerts[0].severity"),
    ]


def test_short_window_must_be_shorter() -> None:
    found = problems(
        """\
        name: a
        sli: {kind: availability}
        target: 0.9
        period: 1d
        alerts:
          - {name: x, severity: page, budgetPercent: 2, longWindow: 5m, shortWindow: 1h}
        """
    )
    assert found == [(6, "alerts[0]", "shortWindow must be shorter than longWindow")]


def test_target_and_target_percent() -> None:
    assert problems(
        "name: a\nsli: {kind: degraded}\ntarget: 0.9\ntargetPercent: 90\nperiod: 1d\n"
    ) == [(4, "targetPercent", "give target or targetPercent, not both")]
    assert problems("name: a\nsli: {kind: degraded}\nperiod: 1d\n") == [
        (1, "target", "required field is missing (or give targetPercent)")
    ]
    found = problems("name: a\nsli: {kind: degraded}\ntargetPercent: 100\nperiod: 1d\n")
    assert found[0][:2] == (3, "targetPercent")


def test_duplicate_keys_are_errors() -> None:
    found = problems("name: a\nsli: {kind: degraded}\ntarget: 0.9\ntarget: 0.8\nperiod: 1d\n")
    assert found == [(4, "target", "duplicate key")]


def test_invalid_yaml() -> None:
    found = problems("name: a\nsli: [kind: availability\ntarget: 0.9\n")
    assert found[0][0] == 3
    assert found[0][2].startswith("invalid YAML")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no SLO document"),
        ("- a\n- b\n", "must be a mapping"),
        ("just text\n", "must be a mapping"),
    ],
)
def test_not_an_slo_document(text: str, message: str) -> None:
    assert message in problems(text)[0][2]


def test_problems_in_several_documents_are_all_reported() -> None:
    found = problems("name: a\nsli: {kind: x}\n---\nname: b\nsli: {kind: degraded}\n")
    # Lines count from the top of the file, across documents.
    assert [(line, field) for line, field, _ in found] == [
        (2, "sli.kind"),
        (1, "period"),
        (4, "period"),
    ]


def test_repeated_names_are_rejected() -> None:
    one = "name: a\nsli: {kind: degraded}\ntarget: 0.9\nperiod: 1d\n"
    # The second one is named, at its own line, with the line of the first.
    assert problems(one + "---\n" + one) == [
        (6, "name", "an SLO named 'a' is already defined at line 1")
    ]


def test_parse_slo_wants_exactly_one() -> None:
    one = "name: a\nsli: {kind: degraded}\ntarget: 0.9\nperiod: 1d\n"
    two = one + "---\n" + one.replace("name: a", "name: b")
    with pytest.raises(SLOFileError, match="expected one SLO document, found 2"):
        parse_slo(two)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SLOFileError) as caught:
        load_slos(tmp_path / "nope.yaml")
    assert caught.value.line is None
    assert "cannot read" in str(caught.value)


def test_error_message_format() -> None:
    with pytest.raises(SLOFileError) as caught:
        parse_slos(
            "name: a\nsli: {kind: degraded, x: 1}\ntarget: 0.9\nperiod: 1d\n", source="f.yaml"
        )
    error = caught.value
    assert (error.file, error.line, error.field) == ("f.yaml", 2, "sli.x")
    assert str(error) == "f.yaml:2: sli.x: unknown field"


def test_an_slo_file_is_read_within_bounds(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "\n".join(lines) + "\nname: a\nsli: {kind: degraded}\ntarget: 0.9\nperiod: 1d\n"
    )
    with pytest.raises(SLOFileError, match=r"bomb\.yaml:\d+: expands to more than 20000 values"):
        load_slos(bomb)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SLOFileError, match=r"fifo\.yaml: cannot read: not a regular file"):
        load_slos(fifo)
