"""The ichaos SLO document, exactly as written in a file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Model, Number
from ._issues import DocumentInvalid, Issue
from ._models import SLI, SLO, Budgeting, Occurrences, Period, percent_to_fraction
from ._rules import BurnRateRule


class NativeDocument(Model):
    """An SLO file: like ``SLO``, but the target may be given as ``targetPercent``."""

    api_version: Literal["ichaos/v1"] | None = None
    """`ichaos/v1`, optional."""
    kind: Literal["SLO"] | None = None
    """`SLO`, optional."""
    name: str = Field(min_length=1)
    """the SLO's name, as expectations, probes and aborts refer to it."""
    description: str | None = None
    """what it promises, in words."""
    sli: SLI
    """what makes one event good."""
    target: Number | None = Field(default=None, ge=0, lt=1)
    """the share of good events promised, below 1 (0.999); or `targetPercent`."""
    target_percent: Number | None = Field(default=None, ge=0, lt=100)
    """the target in percent, below 100 (99.9); or `target`."""
    period: Period
    """the period the budget is for: `run`, or a duration such as `30d`."""
    budgeting: Budgeting = Occurrences()
    """how the error ratio is counted: by occurrences (default) or timeslices."""
    alerts: tuple[BurnRateRule, ...] | None = None
    """multi-window burn-rate alert rules (default: the SRE Workbook's three, page-fast, page-slow
    and ticket)."""

    def issues(self) -> list[Issue]:
        """What stops this document from being an SLO (both targets given, or neither)."""
        try:
            self.to_slo()
        except DocumentInvalid as exc:
            return list(exc.issues)
        return []

    def to_slo(self) -> SLO:
        return SLO(
            name=self.name,
            description=self.description,
            sli=self.sli,
            target=resolve_target(self.target, self.target_percent, ()),
            period=self.period,
            budgeting=self.budgeting,
            alerts=self.alerts,
        )


def resolve_target(target: float | None, percent: float | None, at: tuple[str | int, ...]) -> float:
    """The one target given, as a fraction; ``at`` locates the object holding both."""
    if target is not None and percent is not None:
        raise DocumentInvalid(
            [Issue((*at, "targetPercent"), "give target or targetPercent, not both")]
        )
    if percent is not None:
        return percent_to_fraction(percent)
    if target is None:
        raise DocumentInvalid(
            [Issue((*at, "target"), "required field is missing (or give targetPercent)")]
        )
    return target
