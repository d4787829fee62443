"""Traffic shapes and schedules: pure functions, tested without a server."""

from __future__ import annotations

import statistics
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import Arrivals, Constant, Ramp, Spike, Step, expected_count, schedule


def test_constant_rate_is_evenly_spaced() -> None:
    times = schedule(Constant(20), 2.0)
    assert len(times) == 40
    assert times[0] == 0
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) == pytest.approx(0.05, abs=1e-9)
    assert min(gaps) == pytest.approx(0.05, abs=1e-9)


def test_ramp_sends_the_integral_and_speeds_up() -> None:
    shape = Ramp(start=10, end=30, over=10)
    times = schedule(shape, 10.0)
    assert len(times) == pytest.approx(200, abs=1)  # (10 + 30) / 2 × 10
    first_half = sum(1 for t in times if t < 5)
    assert first_half == pytest.approx(75, abs=1)  # ∫0..5 of 10 + 2t = 75
    assert shape.rate(20) == 30


def test_step_and_spike_rates() -> None:
    step = Step(initial=5, steps=((2.0, 10.0), (4.0, 0.0)))
    assert [step.rate(t) for t in (0, 1.99, 2, 3.5, 4, 9)] == [5, 5, 10, 10, 0, 0]
    assert len(schedule(step, 6.0)) == 5 * 2 + 10 * 2
    spike = Spike(base=10, spikes=((3.0, 2.0, 5.0),))
    assert [spike.rate(t) for t in (2.99, 3, 4.99, 5)] == [10, 50, 50, 10]
    times = schedule(spike, 10.0)
    assert sum(1 for t in times if 3 <= t < 5) == 100
    assert len(times) == 8 * 10 + 100


def test_poisson_is_seeded_and_has_the_right_mean() -> None:
    one = schedule(Constant(50), 60.0, arrivals=Arrivals.POISSON, seed=7)
    two = schedule(Constant(50), 60.0, arrivals=Arrivals.POISSON, seed=7)
    other = schedule(Constant(50), 60.0, arrivals=Arrivals.POISSON, seed=8)
    assert one == two != other
    # 3,000 expected; the Poisson standard deviation is ~55: allow 4 sigma.
    assert abs(len(one) - 3000) < 220
    gaps = [b - a for a, b in pairwise(one)]
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.1)
    assert statistics.stdev(gaps) == pytest.approx(1 / 50, rel=0.15)  # exponential: sd = mean


def test_poisson_follows_a_changing_rate() -> None:
    times = schedule(Step(initial=10, steps=((30.0, 90.0),)), 60.0, arrivals="poisson", seed=1)  # type: ignore[arg-type]
    before = sum(1 for t in times if t < 30)
    after = len(times) - before
    assert after / before == pytest.approx(9, rel=0.25)


def test_bad_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration must be positive"):
        schedule(Constant(1), 0)


@settings(max_examples=40, deadline=None)
@given(
    start=st.floats(0, 200),
    end=st.floats(0, 200),
    over=st.floats(0.5, 20),
    duration=st.floats(0.5, 20),
)
def test_uniform_schedule_sends_the_integral_in_order(
    start: float, end: float, over: float, duration: float
) -> None:
    shape = Ramp(start, end, over)
    times = schedule(shape, duration)
    assert times == sorted(times)
    assert all(0 <= t < duration for t in times)
    assert abs(len(times) - expected_count(shape, duration)) <= 1.01
