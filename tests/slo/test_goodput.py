"""The goodput SLI: a request is good only when it succeeded within every bound given."""

from __future__ import annotations

import pytest

from slo import SLO, GoodputSLI, RequestRecord, SLOFileError, evaluate, parse_slo


def slo(**bounds: float) -> SLO:
    return SLO(name="goodput", sli=GoodputSLI(**bounds), target=0.5, period="run")


def test_a_request_is_good_only_within_every_bound() -> None:
    records = [
        RequestRecord(0, status=200, latency_s=1.0, ttft_s=0.2, tpot_s=0.05),  # good
        RequestRecord(1, status=200, latency_s=1.0, ttft_s=0.6, tpot_s=0.05),  # ttft over
        RequestRecord(2, status=200, latency_s=1.0, ttft_s=0.2, tpot_s=0.2),  # tpot over
        RequestRecord(3, status=200, latency_s=3.0, ttft_s=0.2, tpot_s=0.05),  # latency over
        RequestRecord(4, status=503, latency_s=0.1),  # failed: never good
        RequestRecord(5, status=None, error="timeout"),  # failed
    ]
    result = evaluate(slo(ttft=0.5, tpot=0.1, latency=2.0), records)
    assert (result.good, result.bad, result.excluded) == (1, 5, 0)
    # Each bound alone: only what it judges counts against it (failures always do).
    assert evaluate(slo(ttft=0.5), records).good == 3
    assert evaluate(slo(tpot=0.1), records).good == 3
    assert evaluate(slo(latency=2.0), records).good == 3


def test_missing_measurements_are_judged_conservatively() -> None:
    records = [
        # not streamed: no TTFT, so the whole answer is held to the TTFT bound
        RequestRecord(0, status=200, latency_s=0.3),
        RequestRecord(1, status=200, latency_s=0.9),
        # one token: no TPOT exists, the bound is met
        RequestRecord(2, status=200, latency_s=0.3, ttft_s=0.3, tpot_s=None),
    ]
    assert evaluate(slo(ttft=0.5), records).good == 2
    assert evaluate(slo(tpot=0.01), records).good == 3


def test_a_goodput_sli_needs_a_bound() -> None:
    with pytest.raises(SLOFileError, match="give at least one bound: ttft, tpot or latency"):
        parse_slo("name: g\nsli: {kind: goodput}\ntarget: 0.9\nperiod: run\n")
    parsed = parse_slo("name: g\nsli: {kind: goodput, ttft: 500ms, tpot: 50ms}\ntarget: 0.9\n"
                       "period: run\n")  # fmt: skip
    assert parsed.sli == GoodputSLI(ttft=0.5, tpot=0.05)
