"""The typed SLO model: SLIs, budgeting methods, periods and the SLO itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)

from ._base import Model, Number
from ._duration import DURATION_TEXT_SCHEMA, Duration, coerce_duration, format_duration
from ._rules import BurnRateRule, default_rules


class SLIKind(StrEnum):
    AVAILABILITY = "availability"
    LATENCY = "latency"
    TTFT = "ttft"
    ITL = "itl"
    DEGRADED = "degraded"
    GOODPUT = "goodput"


class Op(StrEnum):
    """How a measured value compares with the threshold for the request to be good."""

    LTE = "lte"
    LT = "lt"


class FailurePolicy(StrEnum):
    """What a latency, TTFT or degraded SLI does with requests that did not succeed (no
    complete response, or a status of 400 or above)."""

    EXCLUDE = "exclude"
    """Not events of this SLI: availability SLOs judge them, so nothing is counted twice."""
    BAD = "bad"
    """Bad events: "served, successfully and within 500 ms"."""


@dataclass(frozen=True)
class StatusPattern:
    """A set of outcomes: a status class (``5xx``), one status (``429``), or ``error`` (no
    complete response came back: connect failure, timeout, reset, broken stream)."""

    status_class: int | None = None
    code: int | None = None

    def __post_init__(self) -> None:
        if self.status_class is not None and self.code is not None:
            raise ValueError("a status pattern is a class or a code, not both")
        if self.status_class is not None and not 1 <= self.status_class <= 5:
            raise ValueError(f"status class must be 1xx to 5xx, got {self.status_class}xx")
        if self.code is not None and not 100 <= self.code <= 599:
            raise ValueError(f"status code must be 100 to 599, got {self.code}")

    @property
    def is_error(self) -> bool:
        return self.status_class is None and self.code is None

    def matches(self, status: int | None) -> bool:
        """``status`` is ``None`` for a request with no complete response."""
        if status is None:
            return self.is_error
        if self.code is not None:
            return status == self.code
        return self.status_class is not None and status // 100 == self.status_class

    def __str__(self) -> str:
        if self.code is not None:
            return str(self.code)
        if self.status_class is not None:
            return f"{self.status_class}xx"
        return "error"

    @classmethod
    def parse(cls, value: object) -> StatusPattern:
        if isinstance(value, StatusPattern):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(code=value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "error":
                return cls()
            if match := re.fullmatch(r"([1-5])xx", text):
                return cls(status_class=int(match.group(1)))
            if text.isdigit():
                return cls(code=int(text))
        raise ValueError(
            f"invalid status pattern {value!r}: use a class (5xx), a code (429) or 'error'"
        )


StatusMatch = Annotated[
    StatusPattern,
    BeforeValidator(StatusPattern.parse),
    PlainSerializer(str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": "^([1-5]xx|[1-5][0-9][0-9]|error)$",
                    "examples": ["5xx", "429", "error"],
                },
                {"type": "integer", "minimum": 100, "maximum": 599},
            ]
        }
    ),
]

DEFAULT_BAD: tuple[StatusPattern, ...] = (
    StatusPattern(status_class=5),
    StatusPattern(code=429),
    StatusPattern(),
)
"""5xx, 429 (the gateway sheds load with 429: the user got no answer) and transport errors."""


class AvailabilitySLI(Model):
    """Good: the request's outcome matches none of the ``bad`` patterns. Every request is an
    event."""

    kind: Literal[SLIKind.AVAILABILITY] = SLIKind.AVAILABILITY
    """`availability`: good unless the outcome matches `bad`."""
    bad: tuple[StatusMatch, ...] = Field(default=DEFAULT_BAD, min_length=1)
    """the outcomes that are bad: status codes or classes (`5xx`, `429`) and `error` for no answer.
    """


class LatencySLI(Model):
    """Good: succeeded and ``latency_s`` op ``threshold``. Successful records without a
    latency are not events; failed ones follow ``failures``."""

    kind: Literal[SLIKind.LATENCY] = SLIKind.LATENCY
    """`latency`: good when it succeeded within `threshold`, end to end."""
    threshold: Duration
    """the bound on the end-to-end latency (from the scheduled send), e.g. `500ms`."""
    op: Op = Op.LTE
    """`lte` (at most the threshold) or `lt` (below it)."""
    failures: FailurePolicy = FailurePolicy.EXCLUDE
    """what requests that did not succeed are: `exclude` (not events) or `bad`."""


class TTFTSLI(Model):
    """Good: succeeded and ``ttft_s`` op ``threshold``. Successful records without a TTFT (not
    streamed) are not events; failed ones follow ``failures``."""

    kind: Literal[SLIKind.TTFT] = SLIKind.TTFT
    """`ttft`: good when it succeeded with its first token within `threshold`."""
    threshold: Duration
    """the bound on the time to first token (from the scheduled send)."""
    op: Op = Op.LTE
    """`lte` (at most the threshold) or `lt` (below it)."""
    failures: FailurePolicy = FailurePolicy.EXCLUDE
    """what requests that did not succeed are: `exclude` (not events) or `bad`."""


class ITLSLI(Model):
    """Good: succeeded and ``itl_s`` (the longest silence between two of its streamed tokens)
    op ``threshold``. A stream that stalls once is bad however fast its other tokens came:
    the user watched it stop. Successful records with fewer than two streamed tokens are not
    events; failed ones follow ``failures``."""

    kind: Literal[SLIKind.ITL] = SLIKind.ITL
    """`itl`: good when it succeeded and no gap between its streamed tokens exceeded
    `threshold`."""
    threshold: Duration
    """the bound on the longest gap between two streamed tokens, e.g. `500ms`."""
    op: Op = Op.LTE
    """`lte` (at most the threshold) or `lt` (below it)."""
    failures: FailurePolicy = FailurePolicy.EXCLUDE
    """what requests that did not succeed are: `exclude` (not events) or `bad`."""


class DegradedSLI(Model):
    """Good: succeeded and not served by a fallback. "At most 2% degraded" is a target of
    0.98 on this SLI. Failed requests follow ``failures``."""

    kind: Literal[SLIKind.DEGRADED] = SLIKind.DEGRADED
    """`degraded`: good when it succeeded and was not served by a fallback."""
    failures: FailurePolicy = FailurePolicy.EXCLUDE
    """what requests that did not succeed are: `exclude` (not events) or `bad`."""


class GoodputSLI(Model):
    """Good: succeeded and within every bound given, at once: time to first token ``ttft``,
    time per output token ``tpot``, end-to-end ``latency``. Every request is an event; a
    failed one is bad. A request that was not streamed has no TTFT of its own: its end-to-end
    latency (which the first token cannot have come after) is held to the TTFT bound instead.
    One with fewer than two tokens has no TPOT, and meets that bound."""

    kind: Literal[SLIKind.GOODPUT] = SLIKind.GOODPUT
    """`goodput`: good when it succeeded within every bound given, at once."""
    ttft: Duration | None = None
    """the bound on the time to first token (a request not streamed: its latency)."""
    tpot: Duration | None = None
    """the bound on the time per output token (fewer than two tokens meet it)."""
    latency: Duration | None = None
    """the bound on the end-to-end latency."""

    @model_validator(mode="after")
    def _a_bound(self) -> GoodputSLI:
        if self.ttft is None and self.tpot is None and self.latency is None:
            raise ValueError("give at least one bound: ttft, tpot or latency")
        return self


SLI = Annotated[
    AvailabilitySLI | LatencySLI | TTFTSLI | ITLSLI | DegradedSLI | GoodputSLI,
    Field(discriminator="kind"),
]


class BudgetingMethod(StrEnum):
    OCCURRENCES = "occurrences"
    TIMESLICES = "timeslices"


class EmptySlices(StrEnum):
    """What a timeslice with no events counts as."""

    SKIP = "skip"
    """Not a slice at all: no traffic is no evidence either way."""
    GOOD = "good"
    """A good slice, as an uptime check that saw nothing wrong would record it."""


class Occurrences(Model):
    """Error ratio = bad events / events."""

    method: Literal[BudgetingMethod.OCCURRENCES] = BudgetingMethod.OCCURRENCES
    """`occurrences`: the error ratio is bad events / events."""


class Timeslices(Model):
    """Error ratio = bad slices / slices. Slices of ``slice`` seconds start at the evaluation
    start; a slice is good when its share of good events is at least ``slice_target``."""

    method: Literal[BudgetingMethod.TIMESLICES] = BudgetingMethod.TIMESLICES
    """`timeslices`: the error ratio is bad slices / slices."""
    slice: Duration
    """the length of a slice, from the evaluation's start, e.g. `10s`."""
    slice_target: Number = Field(gt=0, le=1)
    """the share of good events that makes a slice good (0 to 1)."""
    empty_slices: EmptySlices = EmptySlices.SKIP
    """a slice with no events: `skip` (not a slice) or `good`."""


Budgeting = Annotated[Occurrences | Timeslices, Field(discriminator="method")]


class PeriodKind(StrEnum):
    RUN = "run"
    """The evaluation span itself: first to last record, or the start/end passed in."""


def _coerce_period(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str) and value == PeriodKind.RUN:
        return PeriodKind.RUN
    seconds = coerce_duration(value, info)
    # Checked here rather than by the union, which would report one error per member.
    if isinstance(seconds, int | float) and not seconds > 0:
        raise ValueError(f"a period must be longer than zero, or 'run' (got {value!r})")
    return seconds


def _period_json(value: float | PeriodKind) -> str:
    return str(value) if isinstance(value, PeriodKind) else format_duration(value)


Period = Annotated[
    Annotated[float, Field(gt=0, allow_inf_nan=False)] | PeriodKind,
    BeforeValidator(_coerce_period),
    PlainSerializer(_period_json, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": [k.value for k in PeriodKind]},
                DURATION_TEXT_SCHEMA,
            ]
        }
    ),
]


class SLO(Model):
    """A service level objective: an SLI, a target for it, a period and a budgeting method.

    ``target`` is the good share to reach, in [0, 1). ``period`` is seconds or
    ``PeriodKind.RUN``. ``alerts`` overrides the default burn-rate rules (which are scaled
    to the period); rules given here are used as written, and ``[]`` means no alerting.
    """

    name: str = Field(min_length=1)
    description: str | None = None
    sli: SLI
    target: Number = Field(ge=0, lt=1)
    period: Period
    budgeting: Budgeting = Occurrences()
    alerts: tuple[BurnRateRule, ...] | None = None

    @cached_property
    def budget(self) -> float:
        """The error budget ``1 - target``, computed in decimal so 0.999 gives 0.001."""
        return complement(self.target)

    def period_seconds(self, span: float) -> float:
        """The period T in seconds; ``span`` is the evaluation span, used for ``run``."""
        return span if isinstance(self.period, PeriodKind) else self.period

    def alert_rules(self, period: float) -> tuple[BurnRateRule, ...]:
        """The rules to evaluate when the period is ``period`` seconds long."""
        return self.alerts if self.alerts is not None else default_rules(period)


def complement(fraction: float) -> float:
    """``1 - fraction`` without binary noise: ``complement(0.999) == 0.001``."""
    return float(1 - Decimal(repr(fraction)))


def percent_to_fraction(percent: float) -> float:
    """``99.9`` → ``0.999`` exactly (``99.9 / 100`` is ``0.9990000000000001``)."""
    return float(Decimal(repr(percent)) / 100)
