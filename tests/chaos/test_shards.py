"""The sharded load's controller and protocol, without Ray: the shards here are
:class:`ShardRunner`s in this process (the same code a Ray actor runs), behind an engine that
can also lose one. The real cluster is tests/chaos/test_shards_ray.py's."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chaos import Constant, LoadGenerator, RunSettings, ShardError, schedule
from chaos._loadgen import LoadRecord, run_loop
from chaos._protocols import AnswerRules
from chaos.shards import (
    Batch,
    ClockSample,
    GeneratorSettings,
    ShardedLoad,
    ShardHello,
    ShardRunner,
    ShardWork,
    clock_offset,
    deal,
)
from tests.chaos.test_loadgen import Target, plain, target

__all__ = ["target"]  # the loopback server fixture, shared with the generator's tests

SETTINGS = GeneratorSettings(
    timeout_s=5.0, max_lag_p99_s=0.05, max_cpu_share=0.9, headers={}, rules=AnswerRules()
)


class InProcess:
    """Shards as ShardRunners on threads of this process. ``lose``: the shard that stops
    answering after ``lose_after`` polls (as a dead node's actor does)."""

    where = "this process"

    def __init__(self, lose: int | None = None, lose_after: int = 3, version: str | None = None):
        self.lose, self.lose_after, self.version = lose, lose_after, version
        self.runners: list[ShardRunner] = []
        self.polls = 0
        self.stops: list[int] = []  # how many polls there had been at each stop
        self.closed = False

    def open(self, shards: int) -> None:
        self.runners = [ShardRunner() for _ in range(shards)]

    def hellos(self, timeout: float) -> list[ShardHello]:
        import chaos

        version = self.version or chaos.__version__
        return [ShardHello(f"node-{i}", "here", i, version) for i in range(len(self.runners))]

    def clock(self, shard: int, timeout: float) -> float:
        return time.time()

    def start(self, works: list[ShardWork], timeout: float) -> None:
        for work in works:
            self.runners[work.shard].start(work)

    def take(self, shards: list[int], timeout: float) -> dict[int, Batch | str]:
        self.polls += 1
        out: dict[int, Batch | str] = {}
        for shard in shards:
            if shard == self.lose and self.polls > self.lose_after:
                self.runners[shard].stop()
                out[shard] = "ActorDiedError: the node died"
            else:
                out[shard] = self.runners[shard].take()
        return out

    def stop(self, shards: list[int]) -> None:
        self.stops.append(self.polls)
        for shard in shards:
            self.runners[shard].stop()

    def close(self) -> None:
        self.closed = True


def test_arrival_k_goes_to_shard_k_mod_n_and_every_arrival_to_one() -> None:
    for shards in range(1, 6):
        for count in (0, 1, 7, 20):
            dealt = deal(count, shards)
            assert len(dealt) == shards
            assert sorted(k for part in dealt for k in part) == list(range(count))
            assert all(k % shards == s for s, part in enumerate(dealt) for k in part)
    with pytest.raises(ValueError, match="at least 1"):
        deal(5, 0)


def test_the_clock_offset_is_read_from_the_shortest_round_trip() -> None:
    samples = [ClockSample(10.0, 20.6, 10.4), ClockSample(11.0, 21.05, 11.1),
               ClockSample(12.0, 23.0, 13.0)]  # fmt: skip
    offset, rtt = clock_offset(samples)
    assert offset == pytest.approx(10.0) and rtt == pytest.approx(0.1)
    with pytest.raises(ValueError):
        clock_offset([])


def test_two_shards_send_what_one_process_sends_each_once(target: tuple[str, Target]) -> None:
    url, _ = target
    times = schedule(Constant(100), 1.0)
    one = asyncio.run(LoadGenerator(url, times, plain).run())
    got: list[LoadRecord] = []
    engine = InProcess()
    result = run_loop(ShardedLoad(url, times, plain, shards=2, engine=engine, settings=SETTINGS,
                                  on_record=got.append).run())  # fmt: skip
    assert engine.closed
    # The same requests at the same scheduled times, each recorded once, and each streamed
    # back to the runner once while the run went.
    assert [(r.index, r.scheduled) for r in result.records] == [
        (r.index, r.scheduled) for r in one.records
    ]
    assert sorted(r.index for r in got) == list(range(len(times)))
    assert all(r.status == 200 and r.tokens == 3 for r in result.records)
    health = result.health
    assert health.valid and (health.scheduled, health.started, health.dropped) == (100, 100, 0)
    assert [(s.shard, s.scheduled, s.started, s.lost) for s in health.shards] == [
        (0, 50, 50, False), (1, 50, 50, False),
    ]  # fmt: skip
    # Every send is on the one time axis: none before its scheduled time.
    assert all(r.lag >= 0 for r in result.records)


def test_a_lost_shard_makes_the_load_invalid_and_names_it(target: tuple[str, Target]) -> None:
    url, _ = target
    times = schedule(Constant(50), 2.0)
    got: list[LoadRecord] = []
    engine = InProcess(lose=1, lose_after=3)
    result = run_loop(ShardedLoad(url, times, plain, shards=2, engine=engine, settings=SETTINGS,
                                  on_record=got.append).run())  # fmt: skip
    health = result.health
    assert not health.valid
    (reason,) = health.reasons
    found = re.fullmatch(
        r"shard 1 \(here\): lost \(ActorDiedError: the node died\) on node node-1: "
        r"(\d+) of its 50 requests unaccounted for", reason,
    )  # fmt: skip
    assert found is not None, reason
    assert [s.lost for s in health.shards] == [False, True]
    # Shard 0 sent all of its half; of shard 1's, only what came back before it was lost.
    assert health.shards[0].started == 50 and health.shards[1].started < 50
    assert int(found[1]) == 50 - health.shards[1].started
    assert len(got) == len(result.records) < len(times)


def test_a_stop_reaches_every_shard_at_the_next_poll(target: tuple[str, Target]) -> None:
    url, _ = target
    times = schedule(Constant(20), 30.0)
    engine = InProcess()
    got: list[LoadRecord] = []
    load = ShardedLoad(url, times, plain, shards=2, engine=engine, settings=SETTINGS,
                       on_record=got.append)  # fmt: skip
    asked: list[tuple[int, float]] = []

    async def run() -> list[LoadRecord]:
        stop = asyncio.Event()
        task = asyncio.create_task(load.run(stop))
        # Under way: records of both shards came back (arrivals 0 and 1 are theirs).
        while not {0, 1} <= {r.index for r in got}:  # noqa: ASYNC110 - on the loop's thread
            await asyncio.sleep(0.05)
        asked.append((engine.polls, time.monotonic() - load.start_monotonic))
        stop.set()
        return (await task).records

    records = run_loop(run())
    polls, stopped_at = asked[0]
    # Every shard was told at the controller's next turn, before it asked for another batch.
    assert engine.stops == [polls]
    # And the schedule ended there: of its 30 s, nothing from long after the stop was sent.
    assert len(records) < len(times) and max(r.scheduled for r in records) < stopped_at + 5


def test_a_shard_of_another_version_is_refused(target: tuple[str, Target]) -> None:
    url, _ = target
    engine = InProcess(version="0.0.1")
    load = ShardedLoad(url, [0.0], plain, shards=2, engine=engine, settings=SETTINGS)
    with pytest.raises(ShardError, match=r"inference-chaos 0\.0\.1 .*install the same one"):
        run_loop(load.run())
    assert engine.closed


def test_the_shard_runner_reports_a_failed_generator() -> None:
    runner = ShardRunner()
    work = ShardWork(0, "http://127.0.0.1:9", [0], [0.0], [], SETTINGS, time.time(), 0.0)
    with pytest.raises(ValueError):  # indices and specs do not pair
        runner.start(work)


SHARDED = """\
name: sharded
backend: url
url: http://127.0.0.1:9
load: {rate: 2/s, duration: 2s, shards: 2}
"""


def test_without_ray_a_sharded_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    scenario = tmp_path / "sharded.yaml"
    scenario.write_text(SHARDED)
    no_ray = "import sys; sys.modules['ray'] = None; from chaos.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", no_ray, "run", str(scenario), "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'inference-chaos[distributed]'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()
    # --load-shards asks for it too, on a scenario of one process.
    scenario.write_text(SHARDED.replace(", shards: 2", ""))
    again = subprocess.run(
        [sys.executable, "-c", no_ray, "run", str(scenario), "--load-shards", "3",
         "--report-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 2 and "distributed" in again.stderr


def test_the_runner_refuses_it_too_with_nothing_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaos import Runner, load_scenario, shards

    monkeypatch.setattr(shards, "ray_installed", lambda: False)
    monkeypatch.setattr("chaos.shards._ray.ray_installed", lambda: False)
    scenario = tmp_path / "sharded.yaml"
    scenario.write_text(SHARDED)
    made: list[str] = []
    runner = Runner(
        load_scenario(scenario),
        RunSettings(report_dir=tmp_path),
        target_factory=lambda *_: made.append("target"),
    )  # type: ignore[arg-type,return-value]
    verdict = runner.run().verdict
    assert verdict.status == "harness_error" and made == []
    assert any("inference-chaos[distributed]" in e for e in verdict.harness_errors)


@pytest.mark.parametrize("bad", ["0", "257", "two", "-1"])
def test_a_bad_shard_count_is_a_usage_error(bad: str, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SHARDED.replace(", shards: 2", ""))
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", str(scenario), "--load-shards", bad],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--load-shards" in done.stderr and "1 to 256" in done.stderr


def test_shards_are_checked_in_the_scenario_file(tmp_path: Path) -> None:
    from chaos import ScenarioError, load_scenario

    for text, field in [("shards: 0", "shards"), ("shards: 2, ray_address: 'a b'", "ray_address")]:
        scenario = tmp_path / "s.yaml"
        scenario.write_text(SHARDED.replace("shards: 2", text))
        with pytest.raises(ScenarioError, match=field):
            load_scenario(scenario)


def test_threads_are_not_left_running() -> None:
    # A ShardRunner never started has nothing to stop, and stopping it twice is harmless.
    runner = ShardRunner()
    runner.stop()
    runner.stop()
    assert runner.take().done is False
    assert not [t for t in threading.enumerate() if t.name.startswith("ichaos-shard-")]
