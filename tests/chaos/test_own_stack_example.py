"""The worked example of docs/own-stack.md: ``transformers serve`` on a built-in model behind the
example's router, started, wired and faulted by ichaos from
``scenarios/examples/transformers-serve/stack.yaml``. Each shipped scenario must pass as it is,
and show what its fault does, measured from the journal: the slow link in the time to first
token of the requests it delayed (and only those), the kill in the router's 502s and a new
server process, the damaged weight file in starts that fail until the restore, and the file
back byte for byte.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos import Runner, RunSettings, load_scenario, read_journal, recorders
from tests.conftest import needs_service

pytestmark = [pytest.mark.slow, needs_service]

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "transformers-serve"


@pytest.fixture
def example_env(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if not (Path(sys.executable).parent / "transformers").is_file():
        pytest.skip("transformers serve is not installed (the dev extra brings it)")
    monkeypatch.setenv("ICHAOS_REGISTRY", str(registry))  # `${registry}`: a private copy
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:9")  # a private server
    return registry


def _run(name: str, tmp_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    result = Runner(
        load_scenario(EXAMPLE / name), RunSettings(report_dir=tmp_path / "reports"),
        observers=recorders(),
    ).run()  # fmt: skip
    assert result.verdict.passed, result.verdict.model_dump_json(indent=1)
    return result, list(read_journal(result.run_dir))


def _requests(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in journal if e["type"] == "request"]


def _events(journal: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in journal
            if e["type"] == "service_event" and e["event"]["kind"] == kind]  # fmt: skip


def test_a_slow_link_shows_in_the_first_token_of_the_streams_it_delayed(
    example_env: Path, tmp_path: Path
) -> None:
    result, journal = _run("stream-latency.yaml", tmp_path)
    fault = result.verdict.faults[0]
    assert fault.applied is not None and fault.reverted is not None
    requests = _requests(journal)
    assert requests and all(r["status"] == 200 and r["tokens"] == 8 for r in requests)
    delayed = [r["ttft_s"] for r in requests
               if fault.applied + 0.1 <= r["scheduled"] <= fault.reverted - 1.0]  # fmt: skip
    clear = [r["ttft_s"] for r in requests if r["scheduled"] < fault.applied - 0.5]
    assert delayed and min(delayed) >= 0.3, delayed
    assert clear and max(clear) < 0.3, clear
    # Between tokens the link adds nothing once the stream flows: the gaps stay small.
    assert all(r["tpot_s"] is not None and r["tpot_s"] < 0.3 for r in requests)


def test_a_killed_server_is_restarted_and_the_answers_come_back(
    example_env: Path, tmp_path: Path
) -> None:
    result, journal = _run("kill-restart.yaml", tmp_path)
    kill_at = result.verdict.faults[0].applied
    assert kill_at is not None
    exits = _events(journal, "service_exited")
    assert [(e["service"], e["code"]) for e in exits] == [("model", -9)]
    starts = [e for e in _events(journal, "service_started") if e["service"] == "model"]
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"]
    requests = _requests(journal)
    assert all(r["status"] == 200 for r in requests if r["end"] < kill_at)
    outage = [r for r in requests if r["status"] == 502]
    assert outage and all(r["scheduled"] >= kill_at - 0.5 for r in outage)  # the router's 502
    recovered = result.verdict.time_to_recover_s
    assert recovered is not None and recovered < 20


def test_a_damaged_weight_file_fails_the_starts_until_it_is_restored(
    example_env: Path, tmp_path: Path
) -> None:
    weights = example_env / "fallback" / "v1" / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    result, journal = _run("corrupt-weights.yaml", tmp_path)
    fault = result.verdict.faults[0]
    assert fault.applied is not None and fault.reverted is not None
    exits = _events(journal, "service_exited")
    crashed = [e for e in exits if not e["planned"]]
    assert crashed and all(e["code"] == 1 for e in crashed)  # failed to start on the bad file
    assert all(fault.applied <= e["t"] <= fault.reverted + 1 for e in crashed)
    # Restarted by the fault to load the damaged file (its first exit, asked for), and started
    # again at the restore (ending the start then under way, if the supervisor had one going).
    assert exits[0]["planned"] is True
    starts = [e for e in _events(journal, "service_started") if e["service"] == "model"]
    assert any(e["t"] >= fault.reverted - 1.0 for e in starts)
    ready = [e for e in _events(journal, "service_ready") if e["service"] == "model"]
    assert ready[-1]["t"] > fault.reverted
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    answered_after = [r for r in _requests(journal)
                      if r["scheduled"] > ready[-1]["t"] + 0.5]  # fmt: skip
    assert answered_after and all(r["status"] == 200 for r in answered_after)
