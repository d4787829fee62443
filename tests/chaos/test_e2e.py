"""Shipped scenarios end to end: the real stack as processes, behind the real toxiproxy-server,
driven by the real load generator; and a harness killed with SIGKILL mid-fault, cleaned up by
the next run."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from chaos import (
    Runner,
    RunSettings,
    StreamToxicType,
    ToxiproxyClient,
    ToxiproxyServer,
    Verdict,
    load_scenario,
    read_journal,
    recorders,
    repair,
    wait_until,
)
from tests.chaos._harness import harness
from tests.conftest import needs_service

pytestmark = [pytest.mark.chaos, needs_service]

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def alive(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False


def service_processes(under: Path) -> list[int]:
    """Live processes of the reference service whose command line names a path under ``under``
    (the private registry, the run directory): those a test started, and only those."""
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and alive(int(entry.name), "target_service")
            and alive(int(entry.name), str(under))
        ):
            found.append(int(entry.name))
    return found


def corrupted_files(registry: Path) -> list[str]:
    bad = []
    for manifest in registry.glob("*/*/manifest.json"):
        for name, meta in json.loads(manifest.read_text())["files"].items():
            data = (manifest.parent / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != meta["sha256"]:
                bad.append(f"{manifest.parent.relative_to(registry)}/{name}")
    return bad


def run(name: str, tmp_path: Path) -> Verdict:
    result = Runner(
        load_scenario(SCENARIOS / f"{name}.yaml"),
        RunSettings(report_dir=tmp_path / "reports"),
        observers=recorders(),
    ).run()
    verdict = result.verdict
    unmet = [e for e in verdict.expectations if not e.passed]
    assert result.passed, f"{verdict.status}: {unmet} {verdict.harness_errors}"
    assert service_processes(tmp_path) == [], "processes outlived the run"
    return verdict


def test_worker_kill_is_invisible_to_users(isolated: Path, tmp_path: Path) -> None:
    verdict = run("worker-kill", tmp_path)
    assert verdict.requests.by_status == {"200": verdict.requests.total}
    assert verdict.service_events["worker_restarted"] >= 1
    assert verdict.time_to_recover_s is not None and verdict.time_to_recover_s < 5
    assert not (isolated / "lease.json").exists()


def test_partitioned_primary_is_served_by_the_fallback(isolated: Path, tmp_path: Path) -> None:
    verdict = run("primary-partition", tmp_path)
    (fallback,) = [e for e in verdict.expectations if e.kind == "fallback"]
    assert fallback.measured >= 0.8 and fallback.fallback_after == 0
    (fault,) = verdict.faults
    assert fault.reverted - fault.applied == pytest.approx(8.0, abs=0.5)


def test_a_harness_killed_mid_fault_is_repaired_by_the_next_run(
    isolated: Path, registry: Path, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    scenario = SCENARIOS / "corrupted-checksum.yaml"
    with harness(scenario, reports, tmp_path / "ichaos.log") as child:

        def damaged() -> bool:
            journals = list(reports.glob("*/journal.jsonl"))
            return bool(journals) and any(
                e["type"] == "fault_applied" for e in read_journal(journals[0].parent)
            )

        wait_until(
            damaged, timeout=120, interval=0.2, message="the model fault applied", process=child
        )
        lease = json.loads((isolated / "lease.json").read_text())["processes"]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert corrupted_files(registry) == ["primary/v1/model.safetensors"]
    assert any(alive(p["pid"], p["marker"]) for p in lease), "the stack outlived its harness"

    done = repair(isolated, log=lambda _m: None)

    assert corrupted_files(registry) == []
    assert any("model.safetensors" in line for line in done)
    assert not any(alive(p["pid"], p["marker"]) for p in lease)
    # The supervisor stops its workers and gateway on SIGTERM; they may take a moment.
    wait_until(lambda: service_processes(tmp_path) == [], timeout=20, message="stack gone")
    assert not (isolated / "lease.json").exists()
    assert not any((isolated / "model-backups").glob("*"))


def _journal_has(reports: Path, kind: str) -> bool:
    journals = list(reports.glob("*/journal.jsonl"))
    return bool(journals) and any(e["type"] == kind for e in read_journal(journals[0].parent))


def _lease_names_the_stack(state: Path) -> bool:
    try:
        lease = json.loads((state / "lease.json").read_text())
    except (OSError, ValueError):
        return False
    return any(p["what"] == "stack" for p in lease["processes"])


@pytest.mark.parametrize(
    ("moment", "signals"),
    [
        ("provisioning", [signal.SIGTERM]),  # while the stack loads its models
        ("load", [signal.SIGINT]),  # with the model file damaged
        ("revert", [signal.SIGINT, signal.SIGTERM]),  # a second one while reverting
    ],
)
def test_a_signal_to_the_harness_at_any_moment_leaves_nothing_behind(
    moment: str, signals: list[signal.Signals], isolated: Path, registry: Path, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    log_path = tmp_path / "ichaos.log"
    with harness(SCENARIOS / "corrupted-checksum.yaml", reports, log_path) as child:
        if moment == "provisioning":
            ready = lambda: _lease_names_the_stack(isolated)  # noqa: E731
        else:
            ready = lambda: _journal_has(reports, "fault_applied")  # noqa: E731
        wait_until(ready, timeout=240, interval=0.1, message=f"the run's {moment}",
                   process=child)  # fmt: skip
        owned = json.loads((isolated / "lease.json").read_text())["processes"]
        assert owned, "the run holds its processes in the lease"
        # To the harness's own pid, as a CI runner's cancel does: not to its process group,
        # so nothing but the harness itself can stop the stack.
        child.send_signal(signals[0])
        if len(signals) > 1:
            wait_until(lambda: _journal_has(reports, "abort"), timeout=60, interval=0.02,
                       message="the abort", process=child)  # fmt: skip
            child.send_signal(signals[1])
        code = child.wait(timeout=240)
    said = log_path.read_text()
    assert code == 1, said  # aborted, with a verdict
    (verdict_file,) = reports.glob("*/verdict.json")
    verdict = json.loads(verdict_file.read_text())
    assert verdict["status"] == "aborted", said
    assert verdict["abort"]["reason"] == f"interrupted by {signals[0].name}"
    assert "Traceback" not in said
    if moment == "revert":
        messages = [e.get("text", "") for e in read_journal(verdict_file.parent)]
        assert any("SIGTERM came while reverting" in m for m in messages), messages
    # Everything the run started is gone, the model file is whole again, and the next run's
    # first step (the repair) finds nothing left to do.
    wait_until(lambda: not any(alive(p["pid"], p["marker"]) for p in owned), timeout=30,
               message="the run's processes gone")  # fmt: skip
    assert service_processes(tmp_path) == []
    assert not (isolated / "lease.json").exists()
    assert corrupted_files(registry) == []
    assert repair(isolated, log=lambda _m: None) == []


def _journal(verdict: Verdict, tmp_path: Path) -> list[dict[str, Any]]:
    return [
        e for e in read_journal(tmp_path / "reports" / verdict.run_id) if e["type"] == "request"
    ]


def test_a_cut_stream_on_the_client_hop_is_a_failed_request(isolated: Path, tmp_path: Path) -> None:
    verdict = run("stream-cut", tmp_path)
    (fault,) = verdict.faults
    assert fault.applied is not None and fault.reverted is not None and fault.affected
    failed = [r for r in _journal(verdict, tmp_path) if r["error"] is not None]
    # Each answer the toxic cut is an error though its status was 200 and tokens came.
    assert len(failed) == fault.affected
    assert all(r["status"] == 200 and r["first_token"] is not None for r in failed)
    assert all(fault.applied - 0.5 <= r["scheduled"] <= fault.reverted for r in failed)


def test_a_stall_on_the_primary_links_shows_between_tokens_not_before_them(
    isolated: Path, tmp_path: Path
) -> None:
    verdict = run("stream-stall", tmp_path)
    (fault,) = verdict.faults
    requests = _journal(verdict, tmp_path)
    assert all(r["status"] == 200 and r["error"] is None for r in requests)
    stalled = [r for r in requests if max(r["gaps"]) >= 1.0]
    assert stalled and len(stalled) <= (fault.affected or 0)
    assert all(fault.applied - 0.5 <= r["scheduled"] <= fault.reverted for r in stalled)
    assert max(r["ttft_s"] for r in requests) < 1.0


def test_naive_retries_amplify_a_blip_that_backoff_waits_out(
    isolated: Path, tmp_path: Path
) -> None:
    verdict = run("retry-storm", tmp_path)
    clients = verdict.requests.clients
    assert set(clients) == {"naive", "backoff"}
    requests = _journal(verdict, tmp_path)
    # The verdict's figures are the journal's: every attempt recorded once.
    for name, counts in clients.items():
        mine = [r for r in requests if r.get("client") == name]
        assert counts.requests == len(mine)
        assert counts.attempts == sum(len(r.get("attempts", [])) + 1 for r in mine)
    assert verdict.requests.attempts == sum(c.attempts for c in clients.values()) + sum(
        1 for r in requests if r.get("client") is None
    )
    naive, backoff = (verdict.expectations[i].measured for i in (0, 1))
    assert naive is not None and backoff is not None and naive > backoff + 1
    # A naive client's retries leave at once; a patient one's wait at least its Retry-After.
    for r in requests:
        sends = [a["sent"] for a in r.get("attempts", [])] + [r.get("last_sent")]
        if r.get("client") == "backoff" and len(sends) > 1 and r["attempts"][0]["status"] == 503:
            assert sends[1] - r["attempts"][0]["end"] >= 2.0 - 0.05


def test_a_stream_fault_a_killed_harness_left_on_a_shared_toxiproxy_is_removed(
    isolated: Path, tmp_path: Path, toxiproxy: ToxiproxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Toxiproxy that outlives runs (ICHAOS_TOXIPROXY_URL), a SIGKILLed run's proxies and
    their stream toxics stay; the next run's repair removes them."""
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", toxiproxy.url)
    reports = tmp_path / "reports"

    def stream_toxics(api: ToxiproxyClient) -> list[str]:
        return [f"{name}:{t.type.value}" for name in api.proxies() for t in api.toxics(name)
                if isinstance(t.type, StreamToxicType)]  # fmt: skip

    with (
        toxiproxy.client() as api,
        harness(SCENARIOS / "stream-cut.yaml", reports, tmp_path / "ichaos.log") as child,
    ):
        wait_until(lambda: _journal_has(reports, "fault_applied"), timeout=240, interval=0.1,
                   message="the stream fault applied", process=child)  # fmt: skip
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        left = stream_toxics(api)
        assert left and all(t.endswith(":stream_cut") for t in left), left
        done = repair(isolated, log=lambda _m: None)
        assert any("removed proxy" in line for line in done), done
        assert stream_toxics(api) == []
    wait_until(lambda: service_processes(tmp_path) == [], timeout=20, message="stack gone")
