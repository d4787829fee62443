"""Events in time order, counted over windows by bisection; timeslices as events.

A window of length ``w`` ending at ``t`` covers ``(t - w, t]``: an event exactly on its left
edge belongs to the window before. The one exception is the evaluation start: events at
exactly ``start`` count in every window that reaches back to ``start``, since no earlier
window exists to own them.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

from ._classify import Verdict
from ._errors import EvaluationError
from ._models import EmptySlices, Timeslices
from ._records import positions_between

MAX_STEPS = 10_000_000
"""More slices or evaluation steps than this is a mistake (a 1 ms slice over 30 days), not a
request: it would take minutes and gigabytes."""


@dataclass(frozen=True)
class Events:
    """Events at ``times`` (ascending); positions in ``bad`` are bad events, positions in
    ``excluded`` are not events at all. Only positions in ``[lo, hi)`` are in the span."""

    times: Sequence[float]
    bad: Sequence[int]
    excluded: Sequence[int]
    lo: int
    hi: int
    start: float
    grid_cache: dict[tuple[float, float, int, int, int], list[int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def grid_positions(self, step: float, count: int) -> list[int]:
        """``position_after`` of ``start + k·step`` for k = 0..count."""
        key = (self.start, step, count, self.lo, self.hi)
        cached = self.grid_cache.get(key)
        if cached is None:
            grid = [self.start + k * step for k in range(count + 1)]
            lo, hi = repeat(self.lo), repeat(self.hi)
            cached = list(map(bisect_right, repeat(self.times), grid, lo, hi))
            self.grid_cache[key] = cached
        return cached

    def position_after(self, t: float) -> int:
        """The first position in the span whose time is after ``t``."""
        return bisect_right(self.times, t, self.lo, self.hi)

    def left_position(self, since: float) -> int:
        """The first position of a window that opens at ``since``."""
        return self.lo if since <= self.start else self.position_after(since)

    def positions(self, since: float, until: float) -> tuple[int, int]:
        """Positions ``[i, j)`` of the window ``(since, until]``."""
        i = self.left_position(since)
        return i, max(i, self.position_after(until))

    def counts(self, i: int, j: int) -> tuple[int, int]:
        """(events, bad events) among positions ``[i, j)``."""
        return (j - i) - positions_between(self.excluded, i, j), positions_between(self.bad, i, j)

    def window(self, since: float, until: float) -> tuple[int, int]:
        """(events, bad events) in ``(since, until]``."""
        return self.counts(*self.positions(since, until))

    def events_before(self, position: int) -> int:
        """Events at positions below ``position`` (a running count: differences count)."""
        return position - bisect_left(self.excluded, position)

    def bad_before(self, position: int) -> int:
        return bisect_left(self.bad, position)


def steps_to_cover(span: float, step: float) -> int:
    """How many steps of ``step`` from the start reach the end (at least one).

    A span that is a whole number of steps up to rounding error (3.0000000000000004) is
    that whole number, not one more.
    """
    if not (math.isfinite(step) and step > 0):
        raise EvaluationError(f"a step or window must be a positive number of seconds: {step!r}")
    raw = span / step
    nearest = round(raw)
    count = nearest if math.isclose(raw, nearest, rel_tol=1e-9) else math.ceil(raw)
    if count > MAX_STEPS:
        raise EvaluationError(
            f"{count} steps of {step:g}s over {span:g}s is more than {MAX_STEPS}: "
            "use a longer step or slice"
        )
    return max(1, count)


@dataclass(frozen=True)
class Slice:
    """One timeslice ``[start, end)`` (the last one is ``[start, end]``), with its record
    counts and what it counts as."""

    start: float
    end: float
    good: int
    bad: int
    verdict: Verdict

    @property
    def total(self) -> int:
        return self.good + self.bad


def build_slices(
    records: Events, end: float, budgeting: Timeslices
) -> tuple[Events, tuple[Slice, ...]]:
    """Cut the span of ``records`` (up to ``end``) into slices and judge each. Each slice
    becomes one event at its end time: a slice is only known once it is over."""
    start, lo, hi = records.start, records.lo, records.hi
    length = budgeting.slice
    count = steps_to_cover(end - start, length)
    bounds = [lo]
    bounds.extend(bisect_left(records.times, start + k * length, lo, hi) for k in range(1, count))
    bounds.append(hi)
    slices: list[Slice] = []
    for k in range(count):
        total, bad = records.counts(bounds[k], bounds[k + 1])
        if total == 0:
            good_slice = budgeting.empty_slices is EmptySlices.GOOD
            verdict = Verdict.GOOD if good_slice else Verdict.EXCLUDED
        else:
            good_enough = (total - bad) / total >= budgeting.slice_target
            verdict = Verdict.GOOD if good_enough else Verdict.BAD
        slice_end = end if k == count - 1 else start + (k + 1) * length
        slices.append(Slice(start + k * length, slice_end, total - bad, bad, verdict))
    events = Events(
        times=[s.end for s in slices],
        bad=[k for k, s in enumerate(slices) if s.verdict is Verdict.BAD],
        excluded=[k for k, s in enumerate(slices) if s.verdict is Verdict.EXCLUDED],
        lo=0,
        hi=count,
        start=start,
    )
    return events, tuple(slices)
