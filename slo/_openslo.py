"""OpenSLO v1 ``kind: SLO`` documents, for the fields that map onto ichaos SLOs.

OpenSLO describes SLIs as queries for a metrics backend; ichaos evaluates request records.
So the SLI is written inline, as a ``thresholdMetric`` whose ``metricSource`` has
``type: ichaos`` and an ichaos SLI as its ``spec``. Everything that needs a backend or another
document (``ratioMetric``, ``indicatorRef``, ``alertPolicies``, calendar windows...) is
rejected by name, so nothing is silently dropped; only descriptive metadata is ignored.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError

from ._base import Model, Number
from ._duration import parse_duration
from ._issues import DocumentInvalid, Issue, Loc, issues_from
from ._models import SLI, SLO, Occurrences, SLIKind, Timeslices
from ._native import resolve_target

API_VERSION = "openslo/v1"
METRIC_SOURCE_TYPE = "ichaos"

UNSUPPORTED: dict[str, str] = {
    "spec.indicatorRef": "SLI documents are not read: write the SLI inline in spec.indicator",
    "spec.alertPolicies": (
        "alert policies need AlertCondition documents: ichaos evaluates multi-window "
        "burn-rate rules instead (the SLO's alerts, or the SRE Workbook defaults)"
    ),
    "spec.indicator.spec.ratioMetric": (
        "ratioMetric queries need a metrics backend: use thresholdMetric with "
        f"metricSource.type: {METRIC_SOURCE_TYPE}"
    ),
    "metricSource.metricSourceRef": "data source documents are not read",
    "metricSource.type": f"only metricSource.type: {METRIC_SOURCE_TYPE} can be evaluated",
    "spec.timeWindow[].calendar": "calendar-aligned time windows: only rolling windows",
    "spec.timeWindow[].isRolling": "calendar-aligned time windows: only rolling windows",
    "spec.timeWindow": "more than one time window: give exactly one",
    "spec.budgetingMethod: RatioTimeslices": "RatioTimeslices: use Occurrences or Timeslices",
    "spec.objectives": "more than one objective: give exactly one per SLO",
    "spec.objectives[].indicator": "per-objective indicators (composite SLOs)",
    "spec.objectives[].indicatorRef": "per-objective indicators (composite SLOs)",
    "spec.objectives[].compositeWeight": "composite SLOs",
    "spec.objectives[].op: gt|gte": "gt/gte: a request is good at or under its threshold",
}
"""Every OpenSLO field or value that is rejected, and why (docs/slos.md's table is made of it)."""

IGNORED: tuple[str, ...] = (
    "metadata.displayName",
    "metadata.labels",
    "metadata.annotations",
    "spec.service",
    "spec.indicator.metadata",
    "spec.objectives[].displayName",
)
"""Descriptive fields that are accepted and have no effect."""


class _BudgetingMethod(StrEnum):
    OCCURRENCES = "Occurrences"
    TIMESLICES = "Timeslices"
    RATIO_TIMESLICES = "RatioTimeslices"


class _Op(StrEnum):
    LTE = "lte"
    LT = "lt"
    GTE = "gte"
    GT = "gt"


class _Metadata(Model):
    name: str = Field(min_length=1)
    display_name: str | None = None
    labels: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


class _MetricSource(Model):
    metric_source_ref: Any = None
    type: str | None = None
    spec: dict[str, Any] | None = None


class _ThresholdMetric(Model):
    metric_source: _MetricSource


class _IndicatorSpec(Model):
    threshold_metric: _ThresholdMetric | None = None
    ratio_metric: Any = None


class _Indicator(Model):
    metadata: dict[str, Any] | None = None
    spec: _IndicatorSpec


class _TimeWindow(Model):
    duration: str
    is_rolling: bool = True
    calendar: Any = None


class _Objective(Model):
    display_name: str | None = None
    op: _Op | None = None
    value: Number | None = None
    target: Number | None = Field(default=None, ge=0, lt=1)
    target_percent: Number | None = Field(default=None, ge=0, lt=100)
    time_slice_target: Number | None = Field(default=None, gt=0, le=1)
    time_slice_window: str | None = None
    indicator: Any = None
    indicator_ref: Any = None
    composite_weight: Any = None


class _Spec(Model):
    description: str | None = None
    service: str | None = None
    indicator: _Indicator | None = None
    indicator_ref: Any = None
    time_window: list[_TimeWindow] = Field(min_length=1)
    budgeting_method: _BudgetingMethod
    objectives: list[_Objective] = Field(min_length=1)
    alert_policies: Any = None


class OpenSLODocument(Model):
    api_version: str
    kind: str
    metadata: _Metadata
    spec: _Spec

    def to_slo(self) -> SLO:
        issues = self._unsupported()
        if issues:
            raise DocumentInvalid(issues)
        objective = self.spec.objectives[0]
        at: Loc = ("spec", "objectives", 0)
        sli = self._sli(objective, at)
        target = resolve_target(objective.target, objective.target_percent, at)
        period = _duration(self.spec.time_window[0].duration, ("spec", "timeWindow", 0, "duration"))
        budgeting: Occurrences | Timeslices = Occurrences()
        if self.spec.budgeting_method is _BudgetingMethod.TIMESLICES:
            budgeting = _timeslices(objective, at)
        try:
            return SLO(
                name=self.metadata.name,
                description=self.spec.description or self.metadata.display_name,
                sli=sli,
                target=target,
                period=period,
                budgeting=budgeting,
            )
        except ValidationError as exc:
            raise DocumentInvalid(issues_from(exc)) from exc

    def _unsupported(self) -> list[Issue]:
        found: list[Issue] = []

        def reject(loc: Loc, key: str) -> None:
            found.append(Issue(loc, f"not supported: {UNSUPPORTED[key]}"))

        found.extend(header_issues(self.api_version, self.kind))
        spec = self.spec
        if spec.indicator_ref is not None:
            reject(("spec", "indicatorRef"), "spec.indicatorRef")
        if spec.alert_policies:
            reject(("spec", "alertPolicies"), "spec.alertPolicies")
        if spec.indicator is None:
            if spec.indicator_ref is None:
                found.append(Issue(("spec", "indicator"), "required field is missing"))
        else:
            found.extend(_indicator_issues(spec.indicator))
        if len(spec.time_window) > 1:
            reject(("spec", "timeWindow"), "spec.timeWindow")
        for n, window in enumerate(spec.time_window):
            if window.calendar is not None:
                reject(("spec", "timeWindow", n, "calendar"), "spec.timeWindow[].calendar")
            if not window.is_rolling:
                reject(("spec", "timeWindow", n, "isRolling"), "spec.timeWindow[].isRolling")
        if spec.budgeting_method is _BudgetingMethod.RATIO_TIMESLICES:
            reject(("spec", "budgetingMethod"), "spec.budgetingMethod: RatioTimeslices")
        if len(spec.objectives) > 1:
            reject(("spec", "objectives"), "spec.objectives")
        for n, objective in enumerate(spec.objectives):
            at: Loc = ("spec", "objectives", n)
            for name, value in (
                ("indicator", objective.indicator),
                ("indicatorRef", objective.indicator_ref),
                ("compositeWeight", objective.composite_weight),
            ):
                if value is not None:
                    reject((*at, name), f"spec.objectives[].{name}")
            if objective.op in (_Op.GT, _Op.GTE):
                reject((*at, "op"), "spec.objectives[].op: gt|gte")
        return found

    def _sli(self, objective: _Objective, at: Loc) -> SLI:
        indicator = self.spec.indicator
        metric = None if indicator is None else indicator.spec.threshold_metric
        if metric is None:  # _unsupported() has reported this already
            raise DocumentInvalid([Issue(("spec", "indicator"), "required field is missing")])
        source = metric.metric_source
        source_at: Loc = ("spec", "indicator", "spec", "thresholdMetric", "metricSource", "spec")
        data = dict(source.spec or {})
        injected: dict[str, Loc] = {}
        if objective.op is not None or objective.value is not None:
            kind = data.get("kind")
            if kind not in (SLIKind.LATENCY, SLIKind.TTFT, SLIKind.ITL):
                raise DocumentInvalid(
                    [Issue((*at, "op"), "op and value apply to latency, ttft and itl SLIs only")]
                )
            if objective.op is None or objective.value is None:
                missing = "op" if objective.op is None else "value"
                raise DocumentInvalid(
                    [Issue((*at, missing), "op and value go together (value in milliseconds)")]
                )
            if "threshold" in data or "op" in data:
                raise DocumentInvalid(
                    [Issue((*at, "value"), "the threshold is given twice: here and in the SLI")]
                )
            data["threshold"] = timedelta(milliseconds=objective.value)
            data["op"] = objective.op.value
            injected = {"threshold": (*at, "value"), "op": (*at, "op")}
        try:
            sli: SLI = _SLI.validate_python(data, context={"file": True})
        except ValidationError as exc:
            issues = []
            for issue in issues_from(exc):
                field = next((p for p in issue.loc if p in injected), None)
                loc = injected[field] if isinstance(field, str) else (*source_at, *issue.loc)
                issues.append(Issue(loc, issue.message))
            raise DocumentInvalid(issues) from exc
        return sli


_SLI: TypeAdapter[SLI] = TypeAdapter(SLI)


def header_issues(api_version: object, kind: object) -> list[Issue]:
    """Problems with a document's ``apiVersion`` and ``kind``."""
    found = []
    if api_version != API_VERSION:
        message = f"only {API_VERSION} is supported, got {api_version!r}"
        found.append(Issue(("apiVersion",), message))
    if kind != "SLO":
        message = f"only kind: SLO is supported (SLIs go inline), got {kind!r}"
        found.append(Issue(("kind",), message))
    return found


def _indicator_issues(indicator: _Indicator) -> list[Issue]:
    at: Loc = ("spec", "indicator", "spec")
    found: list[Issue] = []
    if indicator.spec.ratio_metric is not None:
        message = UNSUPPORTED["spec.indicator.spec.ratioMetric"]
        found.append(Issue((*at, "ratioMetric"), f"not supported: {message}"))
    metric = indicator.spec.threshold_metric
    if metric is None:
        if indicator.spec.ratio_metric is None:
            found.append(Issue((*at, "thresholdMetric"), "required field is missing"))
        return found
    source_at: Loc = (*at, "thresholdMetric", "metricSource")
    source = metric.metric_source
    if source.metric_source_ref is not None:
        message = UNSUPPORTED["metricSource.metricSourceRef"]
        found.append(Issue((*source_at, "metricSourceRef"), f"not supported: {message}"))
    if source.type != METRIC_SOURCE_TYPE:
        message = UNSUPPORTED["metricSource.type"]
        found.append(Issue((*source_at, "type"), f"not supported: {message}"))
    if source.spec is None:
        found.append(Issue((*source_at, "spec"), "required field is missing (the ichaos SLI)"))
    return found


def _duration(text: str | None, loc: Loc) -> float:
    if text is None:
        raise DocumentInvalid([Issue(loc, "required field is missing")])
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise DocumentInvalid([Issue(loc, str(exc))]) from exc


def _timeslices(objective: _Objective, at: Loc) -> Timeslices:
    if objective.time_slice_target is None:
        raise DocumentInvalid(
            [Issue((*at, "timeSliceTarget"), "required for Timeslices budgeting")]
        )
    length = _duration(objective.time_slice_window, (*at, "timeSliceWindow"))
    return Timeslices(slice=length, slice_target=objective.time_slice_target)
