"""The run loop against a real loopback HTTP service (uvicorn in a thread) with a scripted
fault: event order, the verdict file, aborts, interrupts and faults that will not revert.

The injector here flips the fake service into failing, so what the runner measures is what the
fault did; the real injectors are tested against the real Toxiproxy and processes elsewhere.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos import (
    ApplyError,
    Injector,
    RevertError,
    Runner,
    RunSettings,
    Target,
    load_scenario,
    read_journal,
    recorders,
)
from chaos._loadgen import frozen_heap
from chaos.injectors import Acted
from tests.chaos._service import Service


@pytest.fixture
def service(served: tuple[str, Service]) -> Iterator[Service]:
    _, state = served
    state.failing, state.ready, state.hanging = False, True, False
    yield state
    state.failing, state.ready, state.hanging = False, True, False


class FakeTarget(Target):
    honours = frozenset({"toxic", "partition", "process", "gpu", "model", "burst"})

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = self.direct_url = url
        self.stopped = False
        self.service_events: list[dict[str, Any]] = []

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.service_events if e["seq"] > since]

    def stop(self) -> None:
        self.stopped = True


class Breaks(Injector):
    """Makes the service answer 503 while applied."""

    def __init__(
        self, service: Service, *, apply_fails: bool = False, revert_fails: bool = False,
        hang: bool = False, counted: Acted | None = None,
    ):  # fmt: skip
        super().__init__()
        self.service, self.apply_fails, self.revert_fails = service, apply_fails, revert_fails
        self.hang = hang
        self.counted = counted
        self.calls: list[str] = []

    @property
    def acted(self) -> Acted | None:
        return self.counted if self.calls[-1:] == ["revert"] else None

    @property
    def description(self) -> str:
        return "the service answers 503"

    def _apply(self) -> None:
        self.calls.append("apply")
        if self.apply_fails:
            raise ApplyError("the proxy is gone")
        if self.hang:
            self.service.hanging = True
        else:
            self.service.failing = True

    def _revert(self) -> None:
        self.calls.append("revert")
        if self.revert_fails:
            raise RevertError("toxiproxy does not answer")
        self.service.failing = self.service.hanging = False


class Harness:
    def __init__(self, tmp_path: Path, url: str, service: Service) -> None:
        self.tmp_path, self.url, self.service = tmp_path, url, service
        self.target_url = url
        self.target: FakeTarget | None = None
        self.injectors: list[Breaks] = []
        self.events: list[Any] = []

    def run(self, body: str, *, observer: Any = None, **injector: Any) -> Any:
        path = self.tmp_path / "scenario.yaml"
        path.write_text(textwrap.dedent(body), encoding="utf-8")

        def target_factory(*_args: Any) -> FakeTarget:
            self.target = FakeTarget(self.target_url)
            return self.target

        def injector_factory(*_args: Any) -> Breaks:
            self.injectors.append(Breaks(self.service, **injector))
            return self.injectors[-1]

        runner = Runner(
            load_scenario(path),
            RunSettings(report_dir=self.tmp_path / "reports", settle=1.0),
            observers=[*recorders(), self.events.append, *([observer] if observer else [])],
            target_factory=target_factory,
            injector_factory=injector_factory,
        )
        return runner.run()

    def types(self) -> list[str]:
        seen = [e.type.value for e in self.events if e.type.value not in {"request", "probe"}]
        return [t for i, t in enumerate(seen) if i == 0 or seen[i - 1] != t]


@pytest.fixture
def harness(tmp_path: Path, served: tuple[str, Service], service: Service) -> Harness:
    return Harness(tmp_path, served[0], service)


# The scripted service answers in this process, so a garbage collection or a busy machine
# can stall the generator's loop here; what these tests judge is not the generator's
# schedule (the test with a 0.0001 ms bound below is), so its lag bound is generous.
SCENARIO = """\
name: scripted
load: {rate: 20/s, duration: 5s, max_lag: 1s}
steady_state:
  probes:
    - {name: ready, kind: http, path: /readyz, json: [{field: ready, equals: true}]}
faults:
  - {name: outage, kind: partition, hop: client, at: 1s, duration: 1s}
"""


def test_a_run_emits_events_in_order_and_writes_a_verdict(harness: Harness) -> None:
    result = harness.run(
        SCENARIO + "expect:\n  - {kind: status, status: '503', min_share: 0.2, during: outage}\n"
    )
    assert result.exit_code == 0, result.verdict
    assert harness.types() == [
        "run_started", "target_ready", "load_started", "fault_applied", "fault_reverted",
        "load_finished", "verdict", "run_finished",
    ]  # fmt: skip
    assert result.report == result.run_dir / "index.html" and result.report.is_file()
    assert (result.run_dir.parent / "index.html").is_file()
    assert harness.injectors[0].calls == ["apply", "revert"]
    assert harness.target is not None and harness.target.stopped
    verdict = result.verdict
    fault = verdict.faults[0]
    assert fault.applied == pytest.approx(1.0, abs=0.3)
    assert fault.reverted == pytest.approx(2.0, abs=0.3)
    assert fault.first_failure_s == pytest.approx(0.0, abs=0.1)
    requests = verdict.requests
    assert requests.total == 100 and 15 <= requests.by_status["503"] <= 25
    assert verdict.steady_state.before_ok and verdict.steady_state.after_ok
    assert verdict.expectations[0].passed
    assert verdict.time_to_recover_s == pytest.approx(0.0, abs=0.2)
    assert (result.run_dir / "verdict.json").is_file()
    journal = list(read_journal(result.run_dir))
    assert sum(1 for e in journal if e["type"] == "request") == 100
    assert journal[-1]["type"] == "run_finished"


def test_a_target_is_held_to_the_fault_kinds_it_honours(harness: Harness) -> None:
    """A target made in code that cannot carry out a kind of fault the scenario asks for: a
    harness error before any load, not a run that skips the fault."""

    class LoadOnly(FakeTarget):
        honours = frozenset({"burst"})

    path = harness.tmp_path / "scenario.yaml"
    path.write_text(SCENARIO, encoding="utf-8")
    result = Runner(
        load_scenario(path), RunSettings(report_dir=harness.tmp_path / "reports", settle=1.0),
        observers=[*recorders(), harness.events.append],
        target_factory=lambda *_a: LoadOnly(harness.url),
    ).run()  # fmt: skip
    assert result.verdict.status == "harness_error"
    assert result.verdict.harness_errors == [
        "LoadOnly does not carry out ['partition'] faults (it honours ['burst'])"
    ]
    assert "load_started" not in harness.types()


def test_an_unmet_expectation_fails_the_run(harness: Harness) -> None:
    result = harness.run(SCENARIO + "expect:\n  - {kind: status, status: 2xx, min_share: 1.0}\n")
    assert result.exit_code == 1 and result.verdict.status == "failed"
    (outcome,) = result.verdict.expectations
    assert not outcome.passed and outcome.measured == pytest.approx(0.8, abs=0.06)


def test_an_abort_condition_stops_early_and_reverts(harness: Harness) -> None:
    result = harness.run(
        """\
        name: aborting
        load: {rate: 20/s, duration: 20s}
        faults:
          - {name: outage, kind: partition, hop: client, at: 1s, duration: 15s}
        abort:
          - {kind: error_ratio, above: 0.5, window: 1s, min_requests: 10}
        expect:
          - {kind: status, status: 2xx, max_share: 1.0}
        """
    )
    assert result.exit_code == 1 and result.verdict.status == "aborted"
    # Stopped early: well short of the 400 requests 20 s of load would have sent.
    assert result.verdict.requests.total < 200
    assert "error ratio" in result.verdict.abort.reason
    assert harness.injectors[0].calls == ["apply", "revert"] and not harness.service.failing
    types = harness.types()
    assert types.index("abort") < types.index("fault_reverted") < types.index("verdict")


def test_a_fault_that_cannot_be_reverted_is_a_harness_error(harness: Harness) -> None:
    result = harness.run(SCENARIO, revert_fails=True)
    assert result.exit_code == 3 and result.verdict.status == "harness_error"
    assert any("toxiproxy does not answer" in e for e in result.verdict.harness_errors)
    failed = [e for e in harness.events if e.type.value == "fault_failed"]
    assert failed and failed[0].data["stage"] == "revert"
    assert harness.target is not None and harness.target.stopped


def test_a_fault_that_cannot_be_applied_stops_the_run(harness: Harness) -> None:
    result = harness.run(SCENARIO, apply_fails=True)
    assert result.exit_code == 3
    assert any("the proxy is gone" in e for e in result.verdict.harness_errors)
    assert harness.injectors[0].calls == ["apply"] and not harness.service.failing
    assert harness.target is not None and harness.target.stopped


def test_no_load_is_sent_when_steady_state_does_not_hold_before(harness: Harness) -> None:
    harness.service.ready = False
    result = harness.run(SCENARIO)
    assert result.exit_code == 1
    assert not result.verdict.steady_state.before_ok
    assert result.verdict.requests.total == 0 and harness.injectors == []


def test_sigint_mid_run_reverts_and_leaves_a_verdict(harness: Harness) -> None:
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = harness.run(SCENARIO.replace("duration: 5s", "duration: 10s"))
    finally:
        timer.cancel()
    assert result.verdict.status == "aborted" and result.exit_code == 1
    assert result.verdict.abort.reason == "interrupted by SIGINT"
    assert harness.injectors[0].calls == ["apply", "revert"] and not harness.service.failing
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_service_events_are_placed_on_the_run_clock(harness: Harness) -> None:
    def service_reacts(event: Any) -> None:
        if event.type.value == "fault_applied" and harness.target is not None:
            harness.target.service_events.append(
                {"seq": 1, "kind": "replica_down", "wall": time.time() + 0.2}
            )

    result = harness.run(SCENARIO, observer=service_reacts)
    assert result.verdict.faults[0].time_to_detect_s == pytest.approx(0.2, abs=0.15)
    assert result.verdict.service_events == {"replica_down": 1}
    (seen,) = [e for e in harness.events if e.type.value == "service_event"]
    assert seen.t == pytest.approx(1.2, abs=0.3)


def test_a_fault_after_the_last_arrival_still_applies(harness: Harness) -> None:
    # Poisson 10/s for 2 s with seed 11: the last request leaves at 1.53 s, the fault is due at
    # 1.9 s. The timeline runs until the load's duration is over, not until its last answer.
    result = harness.run(
        """\
        name: late-fault
        seed: 11
        load: {rate: 10/s, duration: 2s, arrivals: poisson}
        faults:
          - {name: late, kind: partition, hop: client, at: 1.9s, duration: 0.05s}
        expect:
          - {kind: status, status: 2xx, min_share: 0.5}
        """
    )
    assert harness.injectors and harness.injectors[0].calls == ["apply", "revert"]
    (fault,) = result.verdict.faults
    assert fault.applied is not None and fault.applied >= 1.9
    assert result.verdict.status == "passed", result.verdict.harness_errors


def test_a_generator_that_cannot_run_is_a_harness_error(harness: Harness) -> None:
    harness.target_url = "http://[::1"  # aiohttp refuses it before the first request
    result = harness.run("name: unreachable\nload: {rate: 20/s, duration: 2s}\n")
    assert result.verdict.status == "harness_error" and result.exit_code == 3
    assert any("generator" in e for e in result.verdict.harness_errors), result.verdict


def test_a_generator_that_was_the_bottleneck_makes_the_run_invalid(harness: Harness) -> None:
    # A lag bound no generator can keep: the run measured the generator, not the service.
    result = harness.run(
        SCENARIO.replace("duration: 5s, max_lag: 1s}", "duration: 3s, max_lag: 0.0001ms}")
    )
    assert result.verdict.status == "invalid" and result.exit_code == 1
    assert result.verdict.generator is not None and not result.verdict.valid
    assert any("schedule lag" in r for r in result.verdict.generator.reasons)


def test_two_runs_started_in_the_same_second_get_directories_of_their_own(
    tmp_path: Path, served: tuple[str, Service], service: Service
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nload: {rate: 10/s, duration: 1s}\n")
    loaded = load_scenario(path)

    def runner() -> Runner:
        return Runner(loaded, RunSettings(report_dir=tmp_path / "reports", settle=1.0),
                      target_factory=lambda *_a: FakeTarget(served[0]),
                      observers=recorders())  # fmt: skip

    first, second = runner(), runner()
    first.run_dir.mkdir(parents=True)  # the other job got there first, in this very second
    result = second.run()
    assert result.run_dir.name == f"{first.run_dir.name}-2" == result.verdict.run_id
    assert (result.run_dir / "verdict.json").is_file()


def test_a_second_signal_while_reverting_is_said_and_every_revert_still_runs(
    harness: Harness,
) -> None:
    class SlowToRevert(Breaks):
        def _revert(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the impatient second Ctrl-C, mid-revert
            super()._revert()

    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        path = harness.tmp_path / "scenario.yaml"
        path.write_text(SCENARIO.replace("duration: 5s", "duration: 10s"))
        injectors: list[Breaks] = []

        def injector_factory(*_args: Any) -> Breaks:
            injectors.append(SlowToRevert(harness.service))
            return injectors[-1]

        result = Runner(
            load_scenario(path), RunSettings(report_dir=harness.tmp_path / "r", settle=1.0),
            observers=[*recorders(), harness.events.append],
            target_factory=lambda *_a: FakeTarget(harness.url), injector_factory=injector_factory,
        ).run()  # fmt: skip
    finally:
        timer.cancel()
    assert result.verdict.status == "aborted" and result.verdict.abort is not None
    assert result.verdict.abort.reason == "interrupted by SIGINT"
    assert injectors[0].calls == ["apply", "revert"] and not harness.service.failing
    messages = [e.data.get("text", "") for e in harness.events if e.type.value == "message"]
    assert any("SIGTERM came while reverting" in m for m in messages), messages


def test_a_total_hang_trips_an_abort_before_any_request_times_out(harness: Harness) -> None:
    # Nothing answers from 1 s on; requests would time out only at 11 s. Unanswered ones older
    # than `overdue` count as failed, so the abort sees the hang while it is happening.
    result = harness.run(
        """\
        name: hang
        load: {rate: 20/s, duration: 14s, timeout: 10s}
        faults:
          - {name: freeze, kind: partition, hop: client, at: 1s, duration: 12s}
        abort:
          - {kind: error_ratio, above: 0.5, window: 3s, min_requests: 10, overdue: 1s}
        """,
        hang=True,
    )
    verdict = result.verdict
    assert verdict.status == "aborted" and verdict.abort is not None
    assert "unanswered for over 1s" in verdict.abort.reason
    assert verdict.abort.t is not None and verdict.abort.t < 11.0  # before the first timeout
    assert harness.injectors[0].calls == ["apply", "revert"] and not harness.service.hanging


def test_a_burst_shares_the_runs_time_axis_arrivals_and_health(harness: Harness) -> None:
    result = harness.run(
        """\
        name: bursty
        seed: 5
        # What is judged here is where the burst's requests fall, not the generator's lag on
        # a busy machine (the bottleneck rule has a test of its own).
        load: {rate: 10/s, duration: 4s, arrivals: poisson, max_lag: 1s}
        faults:
          - {name: rush, kind: burst, rate: 40/s, at: 1s, duration: 1s}
        expect:
          - {kind: status, status: 2xx, min_share: 1.0, during: rush}
        """
    )
    assert result.verdict.status == "passed", result.verdict
    requests = [e.data for e in harness.events if e.type.value == "request"]
    indexes = [r["index"] for r in requests]
    assert len(indexes) == len(set(indexes)), "burst requests numbered after the main load's"
    (fault,) = result.verdict.faults
    assert fault.applied is not None
    (started,) = [e.data for e in harness.events if e.type.value == "load_started"]
    burst = sorted((r for r in requests if r["index"] >= started["scheduled"]),
                   key=lambda r: r["scheduled"])  # fmt: skip
    # On the run's clock: every burst request is scheduled inside the burst's window.
    assert burst and all(fault.applied <= r["scheduled"] <= fault.applied + 1.0 for r in burst)
    gaps = sorted(b["scheduled"] - a["scheduled"] for a, b in itertools.pairwise(burst))
    assert gaps[0] != pytest.approx(gaps[-1], abs=1e-3), "poisson, not evenly spaced"
    # The generator's health counts both: the main load's and the burst's requests.
    assert result.verdict.generator is not None
    assert result.verdict.generator.scheduled == len(requests)


def test_the_run_loop_writes_nothing_itself_its_observers_do(
    tmp_path: Path, served: tuple[str, Service], service: Service
) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\nload: {rate: 10/s, duration: 1s}\n")
    seen: list[str] = []
    bare = Runner(load_scenario(path), RunSettings(report_dir=tmp_path / "bare", settle=1.0),
                  target_factory=lambda *_a: FakeTarget(served[0]),
                  observers=[lambda e: seen.append(e.type.value)]).run()  # fmt: skip
    # Without recorders the run still has its verdict and its events, and leaves no file.
    assert bare.verdict.status == "passed" and seen[-2:] == ["verdict", "run_finished"]
    assert list(bare.run_dir.iterdir()) == [] and bare.report is None
    recorded = Runner(load_scenario(path), RunSettings(report_dir=tmp_path / "rec", settle=1.0),
                      target_factory=lambda *_a: FakeTarget(served[0]),
                      observers=recorders()).run()  # fmt: skip
    names = sorted(p.name for p in recorded.run_dir.iterdir())
    assert names == ["index.html", "journal.jsonl", "verdict.json"]
    assert recorded.report == recorded.run_dir / "index.html"


METRICS = """\
metrics:
  interval: 0.25s
  series:
    - {name: queue, metric: scripted_queue_depth}
    - {name: rps, metric: scripted_requests, read: rate}
    - {name: failing_rps, metric: scripted_requests_total, labels: {outcome: failed}, read: rate}
    - {name: batch, metric: scripted_batch_size, read: mean}
    - {name: absent, metric: scripted_no_such_metric, chart: false}
"""


def test_the_services_metrics_are_scraped_journaled_judged_and_charted(harness: Harness) -> None:
    result = harness.run(
        SCENARIO.replace("steady_state:\n  probes:\n", "steady_state:\n  probes:\n"
                         "    - {name: calm, kind: metric, series: queue, at_most: 0, "
                         "when: [before, after]}\n"
                         "    - {name: flowing, kind: metric, series: rps, at_least: 1}\n")
        + METRICS
        + """\
expect:
  - {kind: metric, series: queue, at_least: 7, during: outage}
  - {kind: metric, series: queue, at_most: 0, after: outage}
  - {kind: metric, series: batch, at_least: 3.5, during: outage}
  - {kind: metric, series: failing_rps, stat: mean, at_least: 10, during: outage}
  - {kind: metric, series: rps, stat: mean, at_least: 12, at_most: 28}
  - {kind: metric, series: absent, at_most: 1, allow_no_data: true}
"""
    )  # fmt: skip
    verdict = result.verdict
    assert result.exit_code == 0, verdict
    outcomes = verdict.expectations
    assert [o.judgement.value for o in outcomes] == ["met"] * 5 + ["no data"]
    assert outcomes[0].measured == 7.0 and outcomes[1].measured == 0.0
    assert outcomes[0].evidence.unit == "samples" and outcomes[0].evidence.count >= 2
    assert outcomes[5].detail.startswith("no sample among")
    # Every scrape of the load is journaled on the run's clock, about every 0.25 s.
    scrapes = [e for e in read_journal(result.run_dir) if e["type"] == "metrics"]
    times = [e["t"] for e in scrapes]
    assert len(times) >= 12 and times == sorted(times) and times[0] >= 0
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[len(gaps) // 2] == pytest.approx(0.25, abs=0.06)
    # A rate from the second scrape on (the probe's before the load may be the first).
    assert all(e["values"]["rps"] is not None for e in scrapes[1:])
    summary = {m.name: m for m in verdict.metrics}
    assert summary["queue"].samples == len(scrapes) and summary["queue"].max == 7.0
    assert summary["absent"].samples == 0
    assert summary["absent"].problems == ["no sample scripted_no_such_metric exposed"]
    # The probes before and after scraped afresh; the one during read the latest scrape.
    probes = verdict.steady_state.results
    assert [p.value for p in probes["before"]] == [0.0, None]  # the http probe has no value
    # Every second (the probes' interval), not at the scrapes' quarter second.
    assert all(p.ok for p in probes["during"]) and 3 <= len(probes["during"]) <= 8
    page = (result.run_dir / "index.html").read_text()
    assert 'id="metric-0"' in page and "Service metric queue: scripted_queue_depth" in page
    assert "Service metrics" in page and "scripted_no_such_metric" in page
    assert "Service metric absent" not in page  # `chart: false`


def test_a_metric_beyond_its_bound_for_samples_in_a_row_aborts(harness: Harness) -> None:
    result = harness.run(
        """\
        name: metric-abort
        load: {rate: 20/s, duration: 20s, max_lag: 1s}
        faults:
          - {name: outage, kind: partition, hop: client, at: 1s, duration: 15s}
        abort:
          - {kind: metric, series: queue, above: 5, samples: 3}
        metrics:
          interval: 0.2s
          series: [{name: queue, metric: scripted_queue_depth}]
        """
    )
    assert result.verdict.status == "aborted"
    assert result.verdict.abort is not None
    assert result.verdict.abort.reason == "queue > 5 for 3 scrapes in a row (last 7)"
    # After the fault made the queue deep, and long before the 15 s outage would have ended.
    (outage,) = result.verdict.faults
    assert outage.applied is not None and outage.applied < (result.verdict.abort.t or 0)
    assert result.verdict.requests.total < 200
    assert harness.injectors[0].calls == ["apply", "revert"] and not harness.service.failing


def test_the_heap_is_frozen_while_the_load_runs_and_only_then(harness: Harness) -> None:
    """A full garbage collection scans every object of the process while every thread waits,
    the generator's too; the run freezes what it held before the load, so such a stall costs
    only what the load allocated (frozen_heap), and gives the heap back afterwards."""
    frozen_at: dict[str, list[int]] = {}

    def observe(event: Any) -> None:
        frozen_at.setdefault(event.type.value, []).append(gc.get_freeze_count())

    result = harness.run(SCENARIO, observer=observe)
    assert result.verdict.requests.total == 100
    assert len(frozen_at["request"]) == 100 and min(frozen_at["request"]) > 0
    assert frozen_at["target_ready"] == [0] and frozen_at["verdict"] == [0]
    assert gc.get_freeze_count() == 0


def test_frozen_heap_nests_and_unfreezes_once() -> None:
    # The count is of frozen objects still alive: it may fall as some are freed, never to 0
    # while the heap is frozen.
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        with frozen_heap():
            assert gc.get_freeze_count() > 0
        assert gc.get_freeze_count() > 0  # the inner one left the outer's freeze alone
    assert gc.get_freeze_count() == 0


def test_a_fault_that_acted_on_no_answer_was_not_tested(harness: Harness) -> None:
    """A fault that picks answers (a stream fault) and picked none never did its harm: the
    run cannot pass on it. One that did says how many answers it acted on."""
    verdict = harness.run(SCENARIO, counted=Acted(seen=12, affected=0)).verdict
    assert verdict.status == "harness_error"
    assert verdict.harness_errors == [
        "fault outage applied but acted on none of the 12 answers that went through it"
    ]
    verdict = harness.run(SCENARIO, counted=Acted(seen=12, affected=3)).verdict
    assert verdict.status == "passed", verdict.harness_errors
    assert (verdict.faults[0].seen, verdict.faults[0].affected) == (12, 3)
    reverted = [e for e in harness.events if e.type.value == "fault_reverted"]
    assert reverted[-1].data == {"fault": "outage", "seen": 12, "affected": 3}
