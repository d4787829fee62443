"""The worked example of docs/own-stack.md: ``transformers serve`` on a built-in model behind the
example's router, started, wired and faulted by ichaos from
``scenarios/examples/transformers-serve/stack.yaml``, as processes and as the containers of its
compose file. Each shipped scenario must pass as it is,
and show what its fault does, measured from the journal: the slow link in the time to first
token of the requests it delayed (and only those), the kill in the router's 502s and a new
server process, the damaged weight file in starts that fail until the restore, and the file
back byte for byte.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaos import Backend, Runner, RunSettings, load_scenario, read_journal, recorders
from chaos.backends.docker import _ca_bundle
from tests.conftest import needs_service

pytestmark = [pytest.mark.slow, needs_service]

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "examples" / "transformers-serve"


@dataclass(frozen=True)
class Example:
    registry: Path
    folder: Path
    backend: Backend


@pytest.fixture(params=[Backend.LOCAL, Backend.DOCKER], ids=["processes", "compose"])
def example_env(
    request: pytest.FixtureRequest, registry: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Example:  # fmt: skip
    """The example on the local backend (its commands) and on the docker backend (its compose
    file, the image built from its Dockerfile by Compose)."""
    backend: Backend = request.param
    folder = EXAMPLE
    if backend is Backend.LOCAL:
        if not (Path(sys.executable).parent / "transformers").is_file():
            pytest.skip("transformers serve is not installed (the dev extra brings it)")
    else:
        request.getfixturevalue("engine")  # skipped, or failed once, without one
        # A copy, with the CA bundle the image's pip must trust where one is set, as the
        # docker backend's own images get it.
        folder = tmp_path / "example"
        shutil.copytree(EXAMPLE, folder)
        bundle = _ca_bundle()
        if bundle is not None:
            shutil.copyfile(bundle, folder / "ca" / "bundle.pem")
    monkeypatch.setenv("ICHAOS_REGISTRY", str(registry))  # `${registry}`: a private copy
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:9")  # a private server
    return Example(registry, folder, backend)


def _run(name: str, example: Example, tmp_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    settings = RunSettings(report_dir=tmp_path / "reports", backend=example.backend)
    result = Runner(
        load_scenario(example.folder / name), settings, observers=recorders()
    ).run()  # fmt: skip
    assert result.verdict.passed, result.verdict.model_dump_json(indent=1)
    return result, list(read_journal(result.run_dir))


def _requests(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in journal if e["type"] == "request"]


def _events(journal: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in journal
            if e["type"] == "service_event" and e["event"]["kind"] == kind]  # fmt: skip


def test_a_slow_link_shows_in_the_first_token_of_the_streams_it_delayed(
    example_env: Example, tmp_path: Path
) -> None:
    result, journal = _run("stream-latency.yaml", example_env, tmp_path)
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
    example_env: Example, tmp_path: Path
) -> None:
    result, journal = _run("kill-restart.yaml", example_env, tmp_path)
    kill_at = result.verdict.faults[0].applied
    assert kill_at is not None
    exits = _events(journal, "service_exited")
    # A process's status -9; a container's 137, its init's 128 + 9.
    code = -9 if example_env.backend is Backend.LOCAL else 137
    assert [(e["service"], e["code"], e["signal"]) for e in exits] == [("model", code, 9)]
    starts = [e for e in _events(journal, "service_started") if e["service"] == "model"]
    assert len(starts) == 2
    if example_env.backend is Backend.LOCAL:
        assert starts[0]["pid"] != starts[1]["pid"]
    requests = _requests(journal)
    # Before the kill was due nothing failed (`applied` is when the kill was seen done, later
    # than the signal: a request the signal broke can end before it).
    (due,) = [e["planned_at"] for e in journal if e["type"] == "fault_applied"]
    assert all(r["status"] == 200 for r in requests if r["end"] < due)
    outage = [r for r in requests if r["status"] == 502]
    assert outage and all(r["scheduled"] >= kill_at - 0.5 for r in outage)  # the router's 502
    recovered = result.verdict.time_to_recover_s
    assert recovered is not None and recovered < 20


def test_a_damaged_weight_file_fails_the_starts_until_it_is_restored(
    example_env: Example, tmp_path: Path
) -> None:
    weights = example_env.registry / "fallback" / "v1" / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    result, journal = _run("corrupt-weights.yaml", example_env, tmp_path)
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


def test_a_cut_stream_is_a_failed_request_in_the_verdict(
    example_env: Example, tmp_path: Path
) -> None:
    result, journal = _run("stream-cut.yaml", example_env, tmp_path)
    fault = result.verdict.faults[0]
    assert fault.applied is not None and fault.reverted is not None and fault.affected
    requests = _requests(journal)
    failed = [r for r in requests if r["error"] is not None]
    # Each answer the toxic picked is a failed request, though its status was 200 and its
    # first token came; none failed outside the fault's window.
    assert len(failed) == fault.affected, failed
    assert all(r["status"] == 200 and r["first_token"] is not None for r in failed)
    assert all(fault.applied - 0.5 <= r["scheduled"] <= fault.reverted for r in failed)
    assert all(r["tokens"] == 8 for r in requests if r["error"] is None)


def test_a_stalled_stream_shows_in_its_longest_gap_not_its_first_token(
    example_env: Example, tmp_path: Path
) -> None:
    result, journal = _run("stream-stall.yaml", example_env, tmp_path)
    fault = result.verdict.faults[0]
    assert fault.applied is not None and fault.reverted is not None and fault.affected
    requests = _requests(journal)
    assert requests and all(r["status"] == 200 and r["error"] is None for r in requests)
    # Unfaulted, this server's tokens come milliseconds apart.
    stalled = [r for r in requests if max(r["gaps"]) >= 0.2]
    assert len(stalled) == fault.affected
    # The stall comes after the second event (the role chunk, then the first token's), so
    # the longest gap is the first one between tokens, and the first token is on time.
    assert all(r["gaps"].index(max(r["gaps"])) == 0 for r in stalled), stalled
    assert all(r["ttft_s"] < 1.2 for r in requests)
    assert all(fault.applied - 0.5 <= r["scheduled"] <= fault.reverted for r in stalled)
    for r in stalled:
        resumed = r["first_token"] + r["gaps"][0]
        if resumed < fault.reverted - 0.1:  # the whole stall (less the client's late read of
            assert r["gaps"][0] >= 1.4, r  # the token before it), or
        else:  # one the revert released: its held tokens went on as the toxic was removed
            assert resumed <= fault.reverted + 0.3, r


def test_naive_retries_amplify_a_503_blip_that_backoff_waits_out(
    example_env: Example, tmp_path: Path
) -> None:
    result, journal = _run("retry-storm.yaml", example_env, tmp_path)
    verdict = result.verdict
    naive, backoff = (verdict.expectations[i].measured for i in (0, 1))
    assert naive is not None and backoff is not None and naive > backoff
    requests = _requests(journal)
    clients = verdict.requests.clients
    for name in ("naive", "backoff"):
        mine = [r for r in requests if r.get("client") == name]
        assert clients[name].attempts == sum(len(r.get("attempts", [])) + 1 for r in mine)
    for r in requests:
        if not r.get("attempts"):
            continue
        sends = [a["sent"] for a in r["attempts"]] + [r["last_sent"]]
        waits = [b["sent"] - a["end"] if b is not r else r["last_sent"] - a["end"]
                 for a, b in zip(r["attempts"], [*r["attempts"][1:], r], strict=True)]  # fmt: skip
        assert len(sends) == len(waits) + 1
        # The injected 503 says Retry-After: 2: the patient clients wait it, the naive don't.
        after_503 = [w for a, w in zip(r["attempts"], waits, strict=True) if a["status"] == 503]
        if r["client"] == "backoff":
            assert all(w >= 2.0 - 0.05 for w in after_503), r
        else:
            assert all(w < 0.5 for w in after_503), r
