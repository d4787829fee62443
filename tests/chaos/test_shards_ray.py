"""Sharded load on a real Ray cluster of two nodes (``ray start``, one CPU each), against the
reference stack: two shards send the schedule one process sends, each request recorded once,
to the same verdict; a shard's node killed mid-run makes the run invalid, naming it, and
leaves nothing running. And a run without a cluster starts a local one and stops it."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos import (
    EventType,
    RunEvent,
    Runner,
    RunSettings,
    Verdict,
    load_scenario,
    read_journal,
    recorders,
)
from chaos.shards import ray_installed
from tests.chaos._ray_cluster import RayCluster, start_cluster
from tests.chaos.test_e2e import SCENARIOS, service_processes
from tests.conftest import needs_service

pytestmark = [
    pytest.mark.chaos, pytest.mark.slow, needs_service,
    pytest.mark.skipif(not ray_installed(), reason="the distributed extra (./dev installs it)"),
]  # fmt: skip


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[RayCluster]:
    made = start_cluster()
    monkeypatch.setenv("RAY_ADDRESS", made.address)
    try:
        yield made
    finally:
        made.stop()
        left = made.processes()
        shutil.rmtree(made.temp, ignore_errors=True)
        assert left == [], f"Ray processes outlived the cluster: {left}"


def _run(tmp_path: Path, name: str, shards: int, *observers: Any) -> tuple[Verdict, list[Any]]:
    result = Runner(
        load_scenario(SCENARIOS / "baseline.yaml"),
        RunSettings(report_dir=tmp_path / name, load_shards=shards),
        observers=[*recorders(), *observers],
    ).run()  # fmt: skip
    assert service_processes(tmp_path) == [], "stack processes outlived the run"
    return result.verdict, list(read_journal(result.run_dir))


def _requests(journal: list[Any]) -> list[dict[str, Any]]:
    return [e for e in journal if e["type"] == "request"]


def test_two_shards_send_the_one_schedule_to_the_same_verdict(
    isolated: Path, cluster: RayCluster, tmp_path: Path
) -> None:
    one, one_journal = _run(tmp_path, "one", 1)
    two, two_journal = _run(tmp_path, "two", 2)
    assert one.passed and two.passed, (one.status, two.status, two.generator)
    # The same requests at the same scheduled times, each in the journal exactly once.
    mine = sorted((r["index"], r["scheduled"]) for r in _requests(two_journal))
    theirs = sorted((r["index"], r["scheduled"]) for r in _requests(one_journal))
    assert mine == theirs and [i for i, _ in mine] == list(range(160))
    # Dealt k mod 2 over the two nodes, each shard's clock measured against the controller's.
    assert two.generator is not None and one.generator is not None
    shards = two.generator.shards
    assert [(s.shard, s.scheduled, s.started, s.lost) for s in shards] == [
        (0, 80, 80, False), (1, 80, 80, False),
    ]  # fmt: skip
    assert len({s.node for s in shards}) == 2
    assert all(abs(s.clock_offset_ms) <= s.clock_rtt_ms / 2 + 50 for s in shards)
    # Within noise: every SLO and expectation judged the same way, every answer a 2xx.
    assert [(s.name, s.met) for s in two.slos] == [(s.name, s.met) for s in one.slos]
    assert [e.passed for e in two.expectations] == [e.passed for e in one.expectations]
    assert two.requests.total == one.requests.total == 160
    assert all(r["status"] == 200 for r in _requests(two_journal))


def test_a_shard_whose_node_dies_makes_the_run_invalid_and_leaves_nothing(
    isolated: Path, cluster: RayCluster, tmp_path: Path
) -> None:
    killed = threading.Event()

    def kill_second_node(event: RunEvent) -> None:
        if event.type is EventType.LOAD_STARTED:

            def later() -> None:
                cluster.kill_node(1)
                killed.set()

            threading.Timer(3.0, later).start()

    verdict, journal = _run(tmp_path, "killed", 2, kill_second_node)
    assert killed.is_set()
    assert verdict.status == "invalid", verdict.model_dump_json(indent=1)
    assert verdict.generator is not None
    lost = [s for s in verdict.generator.shards if s.lost]
    assert len(lost) == 1 and lost[0].started < lost[0].scheduled
    assert any(r.startswith(f"shard {lost[0].shard} ") and "lost" in r
               for r in verdict.generator.reasons)  # fmt: skip
    # What did come back is in the journal once; the survivor sent all of its half.
    indices = [r["index"] for r in _requests(journal)]
    assert len(indices) == len(set(indices))
    (survivor,) = [s for s in verdict.generator.shards if not s.lost]
    assert survivor.started == survivor.scheduled == 80
    # Nothing of the dead node runs on.
    assert cluster.processes_of_node(1) == []


def test_without_a_cluster_the_run_starts_a_local_one_and_stops_it(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = _ray_processes()
    verdict, journal = _run(tmp_path, "local", 2)
    assert verdict.passed, verdict.model_dump_json(indent=1)
    assert verdict.generator is not None and len(verdict.generator.shards) == 2
    assert sorted(r["index"] for r in _requests(journal)) == list(range(160))
    messages = [e.get("text", "") for e in journal if e["type"] == "message"]
    assert "load: 2 shards on a local Ray cluster" in messages
    assert _ray_processes() == before  # the cluster it started is gone


def _ray_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "raylet" in line or "gcs_server" in line or "ray::" in line:
                found.append(int(entry.name))
    return found
