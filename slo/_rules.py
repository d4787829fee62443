"""Multi-window, multi-burn-rate alert rules (SRE Workbook ch. 5, as Sloth generates them)."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from ._base import Model, Number
from ._duration import THIRTY_DAYS, Duration


class Severity(StrEnum):
    PAGE = "page"
    TICKET = "ticket"


class BurnRateRule(Model):
    """Fires when the burn rate over both windows is above ``factor(T)``.

    The factor is the burn rate that spends ``budget_percent`` of the period's budget in
    ``long_window``: ``F = budget% · T / long_window``. The short window makes the alert
    clear soon after the burning stops.
    """

    name: str = Field(min_length=1)
    """the alert's name, as an alerting rule would carry it."""
    severity: Severity
    """`page` or `ticket`."""
    budget_percent: Number = Field(gt=0, le=100)
    """the share of the period's budget that, spent within `longWindow`, fires it."""
    long_window: Duration
    """the window the burn rate must exceed the factor over."""
    short_window: Duration
    """the shorter window that must agree, so the alert clears soon after the burning stops."""

    @model_validator(mode="after")
    def _short_is_shorter(self) -> Self:
        if self.short_window >= self.long_window:
            raise ValueError("shortWindow must be shorter than longWindow")
        return self

    def factor(self, period: float) -> float:
        """The burn-rate threshold for a period of ``period`` seconds."""
        # One division of exact products: 2 * 2592000 / (100 * 3600) is exactly 14.4.
        return self.budget_percent * period / (100 * self.long_window)

    def scaled(self, period: float) -> BurnRateRule:
        """The rule with both windows scaled from a 30-day period to ``period`` seconds;
        the factor does not change."""
        # Multiply before dividing: one rounding instead of two.
        return self.model_copy(
            update={
                "long_window": self.long_window * period / THIRTY_DAYS,
                "short_window": self.short_window * period / THIRTY_DAYS,
            }
        )


DEFAULT_RULES: tuple[BurnRateRule, ...] = (
    BurnRateRule(
        name="page-fast",
        severity=Severity.PAGE,
        budget_percent=2,
        long_window=3600,
        short_window=300,
    ),
    BurnRateRule(
        name="page-slow",
        severity=Severity.PAGE,
        budget_percent=5,
        long_window=6 * 3600,
        short_window=30 * 60,
    ),
    BurnRateRule(
        name="ticket",
        severity=Severity.TICKET,
        budget_percent=10,
        long_window=3 * 86400,
        short_window=6 * 3600,
    ),
)
"""The SRE Workbook's rules for a 30-day period: burn factors 14.4, 6 and 1."""


def default_rules(period: float) -> tuple[BurnRateRule, ...]:
    """The default rules for a period of ``period`` seconds (windows scaled by T / 30 days)."""
    if period == THIRTY_DAYS:
        return DEFAULT_RULES
    return tuple(rule.scaled(period) for rule in DEFAULT_RULES)
