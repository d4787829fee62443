"""OpenSLO v1 ``kind: SLO`` documents: what maps, and what is refused by name."""

from __future__ import annotations

import textwrap

import pytest

from slo import (
    OPENSLO_UNSUPPORTED,
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    LatencySLI,
    Occurrences,
    Op,
    SLOFileError,
    StatusPattern,
    Timeslices,
    parse_slo,
    parse_slos,
)

BASE = """\
apiVersion: openslo/v1
kind: SLO
metadata:
  name: chat-latency
  displayName: Chat latency
  labels: {team: [ml-platform]}
  annotations: {owner: sre}
spec:
  description: Fast answers.
  service: chat
  indicator:
    metadata:
      name: chat-latency-sli
    spec:
      thresholdMetric:
        metricSource:
          type: ichaos
          spec:
            kind: latency
  timeWindow:
    - duration: 28d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - displayName: fast
      op: lte
      value: 250
      target: 0.99
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(SLOFileError) as caught:
        parse_slos(text, source="open.yaml")
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_maps_onto_the_native_model() -> None:
    assert parse_slo(BASE) == SLO(
        name="chat-latency",
        description="Fast answers.",
        sli=LatencySLI(threshold=0.25, op=Op.LTE),
        target=0.99,
        period=28 * 86400,
        budgeting=Occurrences(),
    )


def test_target_percent_and_timeslices() -> None:
    text = BASE.replace(
        "target: 0.99",
        "targetPercent: 99.9\n      timeSliceTarget: 0.95\n      timeSliceWindow: 1m",
    ).replace("Occurrences", "Timeslices")
    slo = parse_slo(text)
    assert slo.target == 0.999
    assert slo.budgeting == Timeslices(slice=60, slice_target=0.95)


def test_timeslices_need_a_slice_target() -> None:
    text = BASE.replace("Occurrences", "Timeslices")
    assert problems(text) == [
        (25, "spec.objectives[0].timeSliceTarget", "required for Timeslices budgeting")
    ]


def test_threshold_can_live_in_the_metric_source_instead() -> None:
    text = (
        BASE.replace(
            "kind: latency", "kind: ttft\n            threshold: 300ms\n            op: lt"
        )
        .replace("      op: lte\n", "")
        .replace("      value: 250\n", "")
    )
    assert parse_slo(text).sli == TTFTSLI(threshold=0.3, op=Op.LT)


def test_availability_without_op_and_value() -> None:
    text = (
        BASE.replace("kind: latency", "kind: availability\n            bad: [5xx]")
        .replace("      op: lte\n", "")
        .replace("      value: 250\n", "")
    )
    assert parse_slo(text).sli == AvailabilitySLI(bad=(StatusPattern(status_class=5),))


def test_op_and_value_only_for_threshold_slis() -> None:
    text = BASE.replace("kind: latency", "kind: degraded")
    assert problems(text) == [
        (26, "spec.objectives[0].op", "op and value apply to latency, ttft and itl SLIs only")
    ]


def test_threshold_given_twice() -> None:
    text = BASE.replace("kind: latency", "kind: latency\n            threshold: 1s")
    assert problems(text)[0][1] == "spec.objectives[0].value"


def test_bad_value_points_at_the_objective() -> None:
    found = problems(BASE.replace("value: 250", "value: -5"))
    assert found == [(27, "spec.objectives[0].value", "Input should be greater than 0")]


def test_bad_sli_field_points_into_the_metric_source() -> None:
    found = problems(BASE.replace("kind: latency", "kind: latency\n            failures: maybe"))
    assert found[0][:2] == (
        20,
        "spec.indicator.spec.thresholdMetric.metricSource.spec.failures",
    )


def test_unknown_fields_are_rejected() -> None:
    found = problems(BASE.replace("  service: chat", "  service: chat\n  colour: red"))
    assert found == [(11, "spec.colour", "unknown field")]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (("  service: chat", "  service: chat\n  indicatorRef: other"), "spec.indicatorRef"),
        (("  service: chat", "  service: chat\n  alertPolicies: [page]"), "spec.alertPolicies"),
        (
            (
                "      thresholdMetric:",
                "      ratioMetric: {counter: true}\n      thresholdMetric:",
            ),
            "spec.indicator.spec.ratioMetric",
        ),
        (
            ("type: ichaos", "type: Prometheus"),
            "spec.indicator.spec.thresholdMetric.metricSource.type",
        ),
        (
            ("type: ichaos", "type: ichaos\n          metricSourceRef: prom"),
            "spec.indicator.spec.thresholdMetric.metricSource.metricSourceRef",
        ),
        (
            (
                "isRolling: true",
                "isRolling: false\n      calendar: {startTime: '2024-01-01', timeZone: UTC}",
            ),
            "spec.timeWindow[0].calendar",
        ),
        (("isRolling: true", "isRolling: false"), "spec.timeWindow[0].isRolling"),
        (("      isRolling: true", "      isRolling: true\n    - duration: 7d"), "spec.timeWindow"),
        (("Occurrences", "RatioTimeslices"), "spec.budgetingMethod"),
        (("      target: 0.99", "      target: 0.99\n    - target: 0.9"), "spec.objectives"),
        (("op: lte", "op: gte"), "spec.objectives[0].op"),
        (
            ("      target: 0.99", "      target: 0.99\n      compositeWeight: 1"),
            "spec.objectives[0].compositeWeight",
        ),
        (
            ("      target: 0.99", "      target: 0.99\n      indicatorRef: x"),
            "spec.objectives[0].indicatorRef",
        ),
    ],
)
def test_unsupported_fields_are_refused_by_name(edit: tuple[str, str], field: str) -> None:
    text = BASE.replace(*edit)
    assert text != BASE
    found = problems(text)
    assert field in [f for _, f, _ in found]
    message = next(m for _, f, m in found if f == field)
    assert message.startswith("not supported: ")
    assert message.removeprefix("not supported: ") in OPENSLO_UNSUPPORTED.values()


def test_all_unsupported_fields_are_listed_at_once() -> None:
    text = BASE.replace(
        "  service: chat", "  service: chat\n  indicatorRef: x\n  alertPolicies: [a]"
    )
    fields = [f for _, f, _ in problems(text)]
    assert fields == ["spec.indicatorRef", "spec.alertPolicies"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("apiVersion: openslo/v1", "apiVersion: openslo/v1alpha"), "only openslo/v1 is supported"),
        (("kind: SLO", "kind: SLI"), "only kind: SLO is supported"),
        (("duration: 28d", "duration: 1M"), "write days"),
    ],
)
def test_versions_kinds_and_durations(edit: tuple[str, str], message: str) -> None:
    assert message in problems(BASE.replace(*edit))[0][2]


def test_other_versions_and_kinds_are_named_before_their_fields() -> None:
    other = "apiVersion: openslo.com/v2alpha\nkind: AlertPolicy\nmetadata: {name: x}\nspec: {}\n"
    assert problems(other) == [
        (1, "apiVersion", "only openslo/v1 is supported, got 'openslo.com/v2alpha'"),
        (2, "kind", "only kind: SLO is supported (SLIs go inline), got 'AlertPolicy'"),
    ]


def test_month_duration_line() -> None:
    found = problems(BASE.replace("duration: 28d", "duration: 1M"))
    assert found[0][:2] == (21, "spec.timeWindow[0].duration")


def test_openslo_and_native_documents_mix_in_one_file() -> None:
    native = "name: other\nsli: {kind: degraded}\ntarget: 0.9\nperiod: 1d\n"
    slos = parse_slos(textwrap.dedent(BASE) + "---\n" + native)
    assert [s.name for s in slos] == ["chat-latency", "other"]
