"""Traffic shapes as pure functions of time, and the seeded schedule of send times they yield.

A shape says how many requests per second to send at each instant of the run. The schedule is
computed before the run starts, so the load generator only has to keep time, and the same seed
gives the same send times on every run. ``uniform`` arrivals place the k-th request where the
integral of the rate reaches k; ``poisson`` arrivals thin a homogeneous Poisson process at the
peak rate (Lewis and Shedler), which gives a non-homogeneous Poisson process with that rate.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Shape(Protocol):
    def rate(self, t: float) -> float:
        """Requests per second at ``t`` seconds into the run."""
        ...

    def peak(self, duration: float) -> float:
        """The highest rate over ``[0, duration)``."""
        ...


@dataclass(frozen=True)
class Constant:
    per_s: float

    def rate(self, t: float) -> float:
        return self.per_s

    def peak(self, duration: float) -> float:
        return self.per_s


@dataclass(frozen=True)
class Ramp:
    """From ``start`` to ``end`` requests/s, linearly over ``over`` seconds, then ``end``."""

    start: float
    end: float
    over: float

    def rate(self, t: float) -> float:
        if t >= self.over:
            return self.end
        return self.start + (self.end - self.start) * max(t, 0.0) / self.over

    def peak(self, duration: float) -> float:
        return max(self.start, self.rate(duration))


@dataclass(frozen=True)
class Step:
    """Piecewise constant: ``(at, per_s)`` pairs sorted by ``at``; ``initial`` before the first."""

    initial: float
    steps: tuple[tuple[float, float], ...]

    def rate(self, t: float) -> float:
        index = bisect.bisect_right([at for at, _ in self.steps], t) - 1
        return self.initial if index < 0 else self.steps[index][1]

    def peak(self, duration: float) -> float:
        return max([self.initial, *(r for at, r in self.steps if at < duration)])


@dataclass(frozen=True)
class Spike:
    """A ``base`` rate with spikes: during ``[at, at + length)`` the rate is ``base × factor``."""

    base: float
    spikes: tuple[tuple[float, float, float], ...]  # (at, length, factor)

    def rate(self, t: float) -> float:
        for at, length, factor in self.spikes:
            if at <= t < at + length:
                return self.base * factor
        return self.base

    def peak(self, duration: float) -> float:
        factors = [f for at, _, f in self.spikes if at < duration]
        return self.base * max([1.0, *factors])


class Arrivals(StrEnum):
    UNIFORM = "uniform"
    POISSON = "poisson"


_DT = 0.0005  # integration step of the uniform schedule: 0.5 ms
_EPSILON = 1e-9  # counts this close to a whole number are that number (float noise)


def schedule(
    shape: Shape, duration: float, *, arrivals: Arrivals = Arrivals.UNIFORM, seed: int = 0
) -> list[float]:
    """Send times in seconds from the start of the run, sorted, all in ``[0, duration)``."""
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    if arrivals is Arrivals.POISSON:
        return _poisson(shape, duration, random.Random(seed))
    return _uniform(shape, duration)


def _uniform(shape: Shape, duration: float) -> list[float]:
    # Midpoint rule (exact for linear ramps and for steps on the grid), with t computed from
    # the step index so no error accumulates; within a step the count grows linearly, so each
    # whole-count crossing is interpolated.
    steps = max(1, round(duration / _DT))
    h = duration / steps
    times: list[float] = []
    count = 0.0
    next_at = 0.0  # the first request goes at t = 0
    for i in range(steps):
        t = i * h
        added = shape.rate(t + h / 2) * h
        # Strictly past the count: a count reached exactly where the rate falls to zero (or at
        # the very end) sends nothing; a crossing on a step boundary is taken in the next step.
        while added > 0 and count + added > next_at + _EPSILON:
            at = t + max(0.0, next_at - count) / added * h
            if at >= duration - _EPSILON:  # a count reached only at the very end is not sent
                break
            times.append(at)
            next_at += 1
        count += added
    return times


def _poisson(shape: Shape, duration: float, rng: random.Random) -> list[float]:
    peak = shape.peak(duration)
    if peak <= 0:
        return []
    times: list[float] = []
    t = rng.expovariate(peak)
    while t < duration:
        if rng.random() * peak < shape.rate(t):
            times.append(t)
        t += rng.expovariate(peak)
    return times


def expected_count(shape: Shape, duration: float) -> float:
    """The integral of the rate over the run: how many requests the shape asks for."""
    steps = max(1, round(duration / _DT))
    h = duration / steps
    return h * sum(shape.rate(i * h + h / 2) for i in range(steps))
