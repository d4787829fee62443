"""Burn-rate alert rules evaluated over a run's own timeline, as Prometheus would evaluate
them every ``step`` seconds."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import and_, le, sub, truediv

from ._errors import EvaluationError
from ._events import Events, steps_to_cover
from ._rules import BurnRateRule


@dataclass(frozen=True)
class AlertInterval:
    """The rule fired at ``fired_at`` and cleared at ``cleared_at`` (``None``: still firing
    when the evaluation ended). Both are evaluation instants."""

    fired_at: float
    cleared_at: float | None


@dataclass(frozen=True)
class AlertResult:
    """One rule over the timeline: the rule as evaluated (windows already scaled to the
    period), its burn-rate threshold, and every interval it fired."""

    rule: BurnRateRule
    factor: float
    intervals: tuple[AlertInterval, ...]

    @property
    def fired(self) -> bool:
        return bool(self.intervals)

    def firing_at(self, t: float) -> bool:
        return any(
            i.fired_at <= t and (i.cleared_at is None or t < i.cleared_at) for i in self.intervals
        )

    def time_to_detect(self, fault_start: float) -> float | None:
        """Seconds from ``fault_start`` to the first firing at or after it; ``None`` if it
        never fired then. An alert already firing at ``fault_start`` did not detect it."""
        for interval in self.intervals:
            if interval.fired_at >= fault_start:
                return interval.fired_at - fault_start
        return None


def default_step(rules: Sequence[BurnRateRule]) -> float:
    """A fifth of the shortest short window: for 30 days that is Prometheus' usual 1m."""
    return min(rule.short_window for rule in rules) / 5


@dataclass(frozen=True)
class _Grid:
    """The evaluation instants and the running event counts at each (differences of running
    counts are window counts)."""

    times: list[float]
    events: list[int]
    bad: list[int]
    base: tuple[int, int]
    """The running counts at the span's first position: the left edge of any window that
    reaches back to the start."""


def evaluate_rules(
    events: Events,
    rules: Sequence[BurnRateRule],
    *,
    end: float,
    budget: float,
    period: float,
    step: float,
) -> tuple[AlertResult, ...]:
    """Evaluate every rule at ``start, start + step, ...`` up to the first instant at or
    after ``end``. A rule fires when both windows' burn rates are above its factor (strictly,
    as Sloth's ``>``); a window with no events does not burn."""
    if period <= 0:
        raise EvaluationError("alert rules need a period longer than zero")
    start = events.start
    count = steps_to_cover(end - start, step)
    times = [start + k * step for k in range(count + 1)]
    after = events.grid_positions(step, count)
    # map() over C functions: a grid has tens of thousands of instants (30 days at 1m).
    grid = _Grid(
        times=times,
        events=list(map(sub, after, map(bisect_left, repeat(events.excluded), after))),
        bad=list(map(bisect_left, repeat(events.bad), after)),
        base=(events.events_before(events.lo), events.bad_before(events.lo)),
    )
    results = []
    for rule in rules:
        factor = rule.factor(period)
        # Test the short window at every instant, in C; look at the long window only where
        # the short one burns, unless that is a good share of the instants anyway.
        short = _burning_flags(
            *_window_counts(events, grid, rule.short_window, step), budget, factor
        )
        candidates = list(compress(range(len(times)), short))
        if len(candidates) > len(times) // 8:
            long_events, long_bad = _window_counts(events, grid, rule.long_window, step)
            points: Sequence[int] = range(len(times))
        else:
            left_events, left_bad = _left_counts(events, grid, rule.long_window, step, candidates)
            long_events = list(map(sub, map(grid.events.__getitem__, candidates), left_events))
            long_bad = list(map(sub, map(grid.bad.__getitem__, candidates), left_bad))
            points = candidates
        long = _burning_flags(long_events, long_bad, budget, factor)
        firing = list(compress(points, map(and_, long, map(short.__getitem__, points))))
        results.append(AlertResult(rule, factor, _intervals(times, firing)))
    return tuple(results)


def _burning(total: int, bad: int, budget: float, factor: float) -> bool:
    return total > 0 and bad / total / budget > factor


def _burning_flags(totals: list[int], bads: list[int], budget: float, factor: float) -> list[bool]:
    """``_burning`` for every window at once, in C."""
    distinct = set(totals)
    if len(distinct) * 4 > len(totals):
        # Dividing by 1 instead of 0 gives an empty window (no bad events) a burn of 0.
        ratios = map(truediv, bads, map(max, totals, repeat(1)))
        return list(map(factor.__lt__, map(truediv, ratios, repeat(budget))))
    # Few distinct event counts (the usual case): find once per count how many bad events
    # make a window burn, then compare counts.
    needed = {total: _least_burning(total, budget, factor) for total in distinct}
    return list(map(le, map(needed.__getitem__, totals), bads))


def _least_burning(total: int, budget: float, factor: float) -> int:
    """The fewest bad events out of ``total`` that make ``_burning`` true (``total + 1`` if
    none do). Found with ``_burning`` itself, so both agree to the last bit."""
    if total == 0:
        return 1
    bad = min(total + 1, max(0, math.floor(factor * budget * total) + 1))
    while bad > 0 and _burning(total, bad - 1, budget, factor):
        bad -= 1
    while bad <= total and not _burning(total, bad, budget, factor):
        bad += 1
    return bad


def _whole_steps(window: float, step: float) -> int | None:
    """``window`` in steps when it is a whole number of them (then a window's left edge is a
    grid instant and its counts are already known)."""
    steps = window / step
    whole = round(steps)
    return whole if whole >= 1 and math.isclose(steps, whole, rel_tol=1e-9) else None


def _window_counts(
    events: Events, grid: _Grid, window: float, step: float
) -> tuple[list[int], list[int]]:
    """(events, bad events) in the window ending at every grid instant."""
    size = len(grid.times)
    whole = _whole_steps(window, step)
    if whole is not None:
        # At instant k the window opens at instant k - whole, or at the start for k <= whole.
        head = min(whole + 1, size)
        left_events = [grid.base[0]] * head + grid.events[1 : size - whole]
        left_bad = [grid.base[1]] * head + grid.bad[1 : size - whole]
    else:
        left_events, left_bad = _left_counts(events, grid, window, step, range(size))
    return list(map(sub, grid.events, left_events)), list(map(sub, grid.bad, left_bad))


def _left_counts(
    events: Events, grid: _Grid, window: float, step: float, points: Sequence[int]
) -> tuple[list[int], list[int]]:
    """The running counts (events, bad events) at the left edge of the window ending at
    each of ``points``. Lists of ints throughout: millions of small tuples would wake the
    garbage collector, which then walks every record."""
    whole = _whole_steps(window, step)
    if whole is not None:
        # The left edge of the window at instant k is instant k - whole, or the span's
        # start (``base``) for k <= whole: index 0 of these lists stands for the start.
        starts_events = [grid.base[0], *grid.events[1:]]
        starts_bad = [grid.base[1], *grid.bad[1:]]
        edges = list(map(max, map(sub, points, repeat(whole)), repeat(0)))
        return (
            list(map(starts_events.__getitem__, edges)),
            list(map(starts_bad.__getitem__, edges)),
        )
    positions = [events.left_position(grid.times[k] - window) for k in points]
    return (
        list(map(events.events_before, positions)),
        list(map(events.bad_before, positions)),
    )


def _intervals(times: list[float], firing: list[int]) -> tuple[AlertInterval, ...]:
    """Runs of consecutive firing grid instants as intervals; an alert clears at the first
    instant it no longer fires."""
    if not firing:
        return ()
    # Where the gap to the previous firing instant is not one step, a new run starts.
    gaps = map(sub, firing[1:], firing[:-1])
    breaks = list(compress(range(1, len(firing)), map((1).__ne__, gaps)))
    firsts = [0, *breaks]
    lasts = [b - 1 for b in breaks] + [len(firing) - 1]
    final = len(times) - 1
    return tuple(
        AlertInterval(
            times[firing[first]],
            None if firing[last] == final else times[firing[last] + 1],
        )
        for first, last in zip(firsts, lasts, strict=True)
    )
