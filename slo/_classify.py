"""Which records are events of an SLI, and which of those are bad.

Everything here runs as ``map``/``compress`` over the columns of a ``RecordSet``, so the
per-record work happens in C; a record-at-a-time loop would be several times slower.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from itertools import compress, repeat
from operator import is_
from typing import Any

from ._models import (
    ITLSLI,
    SLI,
    TTFTSLI,
    AvailabilitySLI,
    DegradedSLI,
    FailurePolicy,
    GoodputSLI,
    LatencySLI,
    Op,
)
from ._records import Measure, RecordSet


class Verdict(StrEnum):
    """What one record (or one timeslice) did to the error budget."""

    GOOD = "good"
    BAD = "bad"
    EXCLUDED = "excluded"
    """Not an event of this SLI (a non-streamed request for a TTFT SLI, say)."""


@dataclass(frozen=True)
class Classification:
    """Sorted positions (time order in the ``RecordSet``) of the bad and the excluded
    records; every other record is a good event. Bad records are usually few, so positions
    are smaller and faster to count than a flag per record."""

    bad: list[int]
    excluded: list[int]

    def verdicts(self, size: int) -> list[Verdict]:
        verdicts = [Verdict.GOOD] * size
        for i in self.bad:
            verdicts[i] = Verdict.BAD
        for i in self.excluded:
            verdicts[i] = Verdict.EXCLUDED
        return verdicts


def classify(sli: SLI, records: RecordSet) -> Classification:
    """Classify every record (cached per SLI on the record set: SLOs often share an SLI)."""
    cached = records.classifications.get(sli)
    if cached is not None:
        return cached
    if isinstance(sli, AvailabilitySLI):
        result = _availability(sli, records)
    elif isinstance(sli, LatencySLI):
        result = _threshold(records.latencies, sli.threshold, sli.op, sli.failures, records)
    elif isinstance(sli, TTFTSLI):
        result = _threshold(records.ttfts, sli.threshold, sli.op, sli.failures, records)
    elif isinstance(sli, ITLSLI):
        result = _threshold(records.itls, sli.threshold, sli.op, sli.failures, records)
    elif isinstance(sli, GoodputSLI):
        result = _goodput(sli, records)
    else:
        result = _degraded(sli, records)
    records.classifications[sli] = result
    return result


def _availability(sli: AvailabilitySLI, records: RecordSet) -> Classification:
    statuses = records.statuses
    # Few distinct statuses: decide each once, then look every record up in C.
    table = {s: any(p.matches(s) for p in sli.bad) for s in records.distinct_statuses}
    bad = list(compress(range(len(statuses)), map(table.__getitem__, statuses)))
    return Classification(bad=bad, excluded=[])


def _threshold(
    measure: Measure, threshold: float, op: Op, failures: FailurePolicy, records: RecordSet
) -> Classification:
    limit = float(threshold)
    within: Callable[[Any], object] = limit.__ge__ if op is Op.LTE else limit.__gt__
    # ``within(v)`` is True or False for a number and NotImplemented for None (missing, dealt
    # with below); ``is False`` picks the values that miss the threshold, NaN included,
    # without ever asking NotImplemented for its truth.
    flags = map(is_, map(within, measure.values), repeat(False))
    over = list(compress(range(len(records)), flags))
    if failures is FailurePolicy.EXCLUDE:
        bad = records.succeeded_among(over)
        excluded = _union(records.failed_positions, measure.missing)
    else:
        bad = _union(records.failed_positions, over)
        excluded = records.succeeded_among(measure.missing)
    return Classification(bad=bad, excluded=excluded)


def _goodput(sli: GoodputSLI, records: RecordSet) -> Classification:
    bad = set(records.failed_positions)
    latencies = records.latencies.values
    bounds: list[tuple[float | None, list[float | None], bool]] = [
        # (bound, values, whether a missing value meets it)
        (sli.latency, latencies, False),
        (sli.ttft, [t if t is not None else e for t, e in zip(records.ttfts.values, latencies,
                                                                strict=True)], False),
        (sli.tpot, records.tpots.values, True),
    ]  # fmt: skip
    for bound, values, missing_ok in bounds:
        if bound is None:
            continue
        limit = float(bound)
        bad.update(
            i for i, v in enumerate(values)
            if (v is None and not missing_ok) or (v is not None and not v <= limit)
        )  # fmt: skip
    return Classification(bad=sorted(bad), excluded=[])


def _degraded(sli: DegradedSLI, records: RecordSet) -> Classification:
    degraded = records.degraded_positions
    if sli.failures is FailurePolicy.EXCLUDE:
        return Classification(records.succeeded_among(degraded), records.failed_positions)
    return Classification(_union(records.failed_positions, degraded), [])


def _union(first: list[int], second: list[int]) -> list[int]:
    if not first:
        return second
    if not second:
        return first
    return sorted(set(first).union(second))
