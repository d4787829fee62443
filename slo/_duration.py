"""Durations written the Prometheus way (``30d``, ``6h``, ``5m``, ``90s``, ``500ms``, ``1h30m``).

Inside the library every duration is a float number of seconds.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, ValidationInfo, WithJsonSchema

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
# [0-9], not \d: Python's \d also matches other scripts' digits, which JSON Schema's does not.
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+")

DAY = 86400.0
THIRTY_DAYS = 30 * DAY


def parse_duration(text: str) -> float:
    """``"1h30m"`` → ``5400.0`` seconds. Units: ms, s, m, h, d, w; no spaces, no sign.

    Months and years are refused on purpose: their length depends on the calendar.
    """
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        hint = ""
        if re.fullmatch(r"\d+(?:\.\d+)?[MQY]", compact):
            hint = " (months, quarters and years have no fixed length: write days, e.g. 30d)"
        raise ValueError(
            f"invalid duration {text!r}{hint}; write a number and a unit (ms, s, m, h, d, w), "
            "e.g. 500ms, 90s, 5m, 6h, 30d or 1h30m"
        )
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(compact))


def format_duration(seconds: float) -> str:
    """The shortest exact spelling in the units above: 2592000 → ``30d``, 90 → ``1m30s``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    # Work in whole milliseconds where that is exact, so 0.5 → 500ms rather than 0.5s.
    millis = round(seconds * 1000)
    if not math.isclose(millis / 1000, seconds, rel_tol=1e-12, abs_tol=1e-12):
        return f"{seconds:g}s"
    if millis == 0:
        return "0s"
    parts: list[str] = []
    # Weeks are accepted on input but never written: "9d" reads better than "1w2d".
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def coerce_duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValueError("a duration must be a string such as 5m, not a boolean")
    if isinstance(value, int | float) and _from_file(info):
        # In a file a bare number is a trap: is 500 seconds or milliseconds?
        raise ValueError(f"a duration needs a unit: write e.g. {value}ms or {value}s")
    return value


def _from_file(info: ValidationInfo) -> bool:
    context = info.context
    return isinstance(context, dict) and bool(context.get("file"))


DURATION_TEXT_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^\s*([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+\s*$",
    "examples": ["500ms", "30s", "5m", "1h30m", "30d"],
}
"""A duration as files write it, for editors' JSON Schema."""

Duration = Annotated[
    float,
    BeforeValidator(coerce_duration),
    Field(gt=0, allow_inf_nan=False),
    PlainSerializer(format_duration, when_used="json"),
    # The schema is for files, where a bare number is refused (see coerce_duration).
    WithJsonSchema(DURATION_TEXT_SCHEMA),
]
"""A positive duration in seconds; from a file it must be written with a unit."""
