"""What a run's bad events would cost out of a production period's error budget."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Extrapolation:
    """The run's bad events priced against the error budget of a production ``period``.

    ``budget_events`` is how many bad events (or bad slices, for timeslices) the whole
    period's budget allows; ``consumed`` is the share of it the run's ``bad_events`` use.
    ``budget_minutes`` is the whole budget as minutes of total outage (43.2 for 99.9% over
    30 days); ``cost_minutes`` is the run's share of those minutes.
    """

    period: float
    """Seconds."""
    budget: float
    bad_events: int
    events_per_second: float | None
    """Production SLI events per second (occurrences); ``None`` for timeslices."""
    budget_events: float
    consumed: float

    @property
    def budget_minutes(self) -> float:
        return self.budget * self.period / 60

    @property
    def cost_minutes(self) -> float:
        return self.consumed * self.budget_minutes

    @property
    def remaining(self) -> float:
        return 1 - self.consumed


def occurrences_cost(
    *, bad: int, events: int, records: int, budget: float, period: float, production_rps: float
) -> Extrapolation:
    """Production sees ``production_rps`` requests per second; the share of them that are
    events of this SLI is taken from the run (``events / records``)."""
    per_second = production_rps * events / records if records else 0.0
    allowed = budget * per_second * period
    consumed = bad / allowed if allowed > 0 else 0.0
    return Extrapolation(period, budget, bad, per_second, allowed, consumed)


def timeslices_cost(
    *, bad: int, budget: float, period: float, slice_length: float
) -> Extrapolation:
    """A bad slice costs one slice of the period's slices, whatever the request rate."""
    allowed = budget * period / slice_length
    return Extrapolation(period, budget, bad, None, allowed, bad / allowed)


@dataclass(frozen=True)
class BreachCost:
    """What a run costs of a production period's error budget, priced by *time*: the run
    spent ``error_ratio × span`` seconds as bad as a full outage (``breached``), and the
    period's budget is ``budget × period`` seconds of it. The same for occurrences and
    timeslices, and independent of any assumed production request rate: the same one-second
    outage costs the same, whatever traffic production would have had in that second."""

    period: float
    """Seconds (30 days unless the SLO's own period is fixed)."""
    budget: float
    breached: float
    """Seconds of full-outage equivalent the run spent: error ratio × span."""

    @property
    def budget_seconds(self) -> float:
        return self.budget * self.period

    @property
    def consumed(self) -> float:
        """The share of the period's budget the run spent."""
        return self.breached / self.budget_seconds if self.budget_seconds > 0 else 0.0

    @property
    def budget_minutes(self) -> float:
        return self.budget_seconds / 60

    @property
    def breached_minutes(self) -> float:
        return self.breached / 60


def breach_cost(*, error_ratio: float, span: float, budget: float, period: float) -> BreachCost:
    return BreachCost(period=period, budget=budget, breached=error_ratio * span)
