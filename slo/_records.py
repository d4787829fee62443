"""Request records, and the columnar, time-sorted view that evaluations run on."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from functools import cached_property
from itertools import compress, repeat
from operator import attrgetter, is_, is_not, le
from typing import TYPE_CHECKING, TypeVar, overload

from ._errors import EvaluationError

if TYPE_CHECKING:
    from ._classify import Classification
    from ._models import SLI

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one request did, as the load generator saw it.

    ``timestamp``: the instant the request counts at, in seconds on any clock the whole run
    shares (run-relative or Unix epoch). ``status``: the HTTP status, ``None`` when no response
    came back. ``latency_s`` / ``ttft_s``: seconds to the last byte / the first streamed token,
    ``None`` when not measured (``ttft_s`` is ``None`` for requests that were not streamed).
    ``tpot_s``: seconds per output token after the first, ``None`` with fewer than two.
    ``itl_s``: the longest gap between two streamed tokens, ``None`` with fewer than two.
    ``degraded``: served by a fallback. ``error``: the client-side failure class (``timeout``,
    ``connect``, ``reset``, ``stream``...) when no complete response was received; leave it
    ``None`` for HTTP error responses, whose ``status`` already says what happened.
    """

    timestamp: float
    _: KW_ONLY
    status: int | None = None
    latency_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    itl_s: float | None = None
    degraded: bool = False
    error: str | None = None

    @property
    def answered(self) -> bool:
        """A complete HTTP response came back (whatever its status)."""
        return self.status is not None and self.error is None

    @property
    def succeeded(self) -> bool:
        """Answered with a status below 400."""
        return self.answered and self.status is not None and self.status < 400


class RecordSet(Sequence[RequestRecord]):
    """Request records sorted by time and held as columns, so that evaluating an SLO costs a
    few passes in C over them rather than a Python loop per record. Build it once and
    evaluate many SLOs on it (classifications are cached per SLI).

    Sorting is stable, so records with equal timestamps keep their input order.
    ``input_index(i)`` maps a position here back to the position in the input.
    """

    def __init__(self, records: Iterable[RequestRecord]) -> None:
        items = list(records)
        # Contiguous doubles: bisecting a list of float objects scattered over the heap
        # (they were made with the records) is three times slower, all cache misses.
        times = array("d", list(map(attrgetter("timestamp"), items)))
        order: list[int] | None = None
        if not all(map(le, times, times[1:])):
            order = sorted(range(len(items)), key=times.__getitem__)
            items = [items[i] for i in order]
            times = array("d", [times[i] for i in order])
        # A NaN or infinity anywhere makes the sum non-finite: one C-speed pass finds out.
        if not math.isfinite(sum(times)):
            bad = next(i for i, t in enumerate(times) if not math.isfinite(t))
            where = bad if order is None else order[bad]
            raise EvaluationError(f"record {where} has a non-finite timestamp {times[bad]!r}")
        self._records = items
        self._order = order
        self.times = times
        """Timestamps, ascending."""
        self.classifications: dict[SLI, Classification] = {}
        """Each SLI's classification of these records, by SLI (``_classify`` fills it)."""
        self.grid_cache: dict[tuple[float, float, int, int, int], list[int]] = {}
        """Positions after each instant of an alert-evaluation grid, shared by every SLO
        evaluated on these records (they evaluate on the same grid)."""

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> RequestRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[RequestRecord]: ...
    def __getitem__(self, index: int | slice) -> RequestRecord | Sequence[RequestRecord]:
        return self._records[index]

    def input_index(self, position: int) -> int:
        """Where the record at ``position`` (time order) was in the input."""
        return position if self._order is None else self._order[position]

    def to_input_order(self, values: list[_T]) -> list[_T]:
        """Reorder per-record ``values`` from time order back to input order."""
        if self._order is None:
            return values
        result = values.copy()
        for position, index in enumerate(self._order):
            result[index] = values[position]
        return result

    def span_positions(self, start: float, end: float) -> tuple[int, int]:
        """Positions ``[lo, hi)`` of the records with ``start <= timestamp <= end``."""
        return bisect_left(self.times, start), bisect_right(self.times, end)

    @cached_property
    def statuses(self) -> list[int | None]:
        """HTTP status per record; ``None`` when no complete response came back (no status,
        or a client-side error such as a stream cut after the headers)."""
        statuses: list[int | None] = list(map(attrgetter("status"), self._records))
        errors = map(attrgetter("error"), self._records)
        for i in compress(range(len(statuses)), map(is_not, errors, repeat(None))):
            statuses[i] = None
        return statuses

    @cached_property
    def distinct_statuses(self) -> frozenset[int | None]:
        """The few statuses that occur: decide about each once, then look records up."""
        return frozenset(self.statuses)

    @cached_property
    def _success(self) -> dict[int | None, bool]:
        return {s: s is not None and s < 400 for s in self.distinct_statuses}

    def succeeded_among(self, positions: list[int]) -> list[int]:
        """The positions among ``positions`` whose records succeeded."""
        outcomes = map(self._success.__getitem__, map(self.statuses.__getitem__, positions))
        return list(compress(positions, outcomes))

    @cached_property
    def failed_positions(self) -> list[int]:
        """Positions of the records that did not succeed."""
        failed = {s: not ok for s, ok in self._success.items()}
        return list(compress(range(len(self)), map(failed.__getitem__, self.statuses)))

    @cached_property
    def latencies(self) -> Measure:
        return _measure(self._records, "latency_s")

    @cached_property
    def ttfts(self) -> Measure:
        return _measure(self._records, "ttft_s")

    @cached_property
    def tpots(self) -> Measure:
        return _measure(self._records, "tpot_s")

    @cached_property
    def itls(self) -> Measure:
        return _measure(self._records, "itl_s")

    @cached_property
    def degraded_positions(self) -> list[int]:
        """Positions of the records served by a fallback."""
        return list(compress(range(len(self)), map(attrgetter("degraded"), self._records)))


@dataclass(frozen=True)
class Measure:
    """One optional measurement per record (``None`` where missing), and the positions of
    the missing ones."""

    values: list[float | None]
    missing: list[int]


def _measure(records: list[RequestRecord], name: str) -> Measure:
    values: list[float | None] = list(map(attrgetter(name), records))
    missing = list(compress(range(len(values)), map(is_, values, repeat(None))))
    return Measure(values, missing)


def as_record_set(records: Iterable[RequestRecord] | RecordSet) -> RecordSet:
    return records if isinstance(records, RecordSet) else RecordSet(records)


def positions_between(positions: Sequence[int], lo: int, hi: int) -> int:
    """How many of the sorted ``positions`` fall in ``[lo, hi)``."""
    return bisect_left(positions, hi) - bisect_left(positions, lo)
