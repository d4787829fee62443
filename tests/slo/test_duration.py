"""Durations: Prometheus-style strings to seconds and back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from slo import format_duration, parse_duration
from slo._duration import Duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("30d", 2592000.0),
        ("2w", 1209600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("1m0.5s", 60.5),
        (" 10s ", 10.0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "-5m", "5x", "m5", "1M", "1Y", "1e3s", "5mm"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_months_get_a_hint() -> None:
    with pytest.raises(ValueError, match="write days"):
        parse_duration("1M")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (2592000.0, "30d"),
        (5400.0, "1h30m"),
        (0.5, "500ms"),
        (90.0, "1m30s"),
        (604800.0, "7d"),
        (0.0, "0s"),
        (120.0, "2m"),
        (0.0001, "0.0001s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=10**11))
def test_format_then_parse_is_exact_for_whole_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12)


def test_duration_field_from_python_accepts_seconds_and_timedelta() -> None:
    adapter: TypeAdapter[float] = TypeAdapter(Duration)
    assert adapter.validate_python(1.5) == 1.5
    assert adapter.validate_python(timedelta(minutes=2)) == 120.0
    assert adapter.validate_python("2m") == 120.0


def test_duration_field_from_a_file_needs_a_unit() -> None:
    adapter: TypeAdapter[float] = TypeAdapter(Duration)
    with pytest.raises(ValidationError, match="needs a unit"):
        adapter.validate_python(500, context={"file": True})


@pytest.mark.parametrize("value", [0, -1.0, True, float("inf"), "0s"])
def test_duration_field_must_be_positive_and_finite(value: object) -> None:
    adapter: TypeAdapter[float] = TypeAdapter(Duration)
    with pytest.raises(ValidationError):
        adapter.validate_python(value)
