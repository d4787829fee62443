"""The user's own stack as processes: real services (an OpenAI-compatible server of known timing
behind the example's router), the real Toxiproxy on the client hop and the router→model link,
and the real supervisor of ichaos restarting what dies.

What each fault does is seen from outside the harness's own bookkeeping: the link's latency in
the TTFT of the requests sent while it was on, a kill in the process table and in the answers,
a model file's restore in its bytes, and after every run (a refused one, a killed harness)
nothing of it left running.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chaos import (
    Runner,
    RunSettings,
    Target,
    load_scenario,
    read_journal,
    recorders,
    repair,
    wait_until,
)
from chaos._errors import BackendError
from chaos._runner import default_target
from chaos.backends import ServicesTarget
from chaos.injectors import process_state
from tests.conftest import needs_service

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "bench" / "_openai_server.py"
ROUTER = ROOT / "scenarios" / "examples" / "transformers-serve" / "router.py"

STACK = f"""\
entry: router
services:
  model:
    command: ["${{python}}", "{SERVER}", "--port", "${{port}}", "--ttft-ms", "20",
              "--itl-ms", "5", "--tokens", "8"]
    model_dir: weights
    restart: on-failure
    restart_delay: 200ms
  router:
    command: ["${{python}}", "{ROUTER}", "--port", "${{port}}", "--upstream", "${{link:model}}"]
    api: openai-chat
    model: m
links:
  - {{from: router, to: model}}
"""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:9")  # a private server
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(os.urandom(4096))
    (tmp_path / "stack.yaml").write_text(STACK)
    return tmp_path


def _run(folder: Path, body: str, stack_text: str | None = None) -> tuple[Any, list[Any]]:
    if stack_text is not None:
        (folder / "stack.yaml").write_text(stack_text)
    path = folder / "scenario.yaml"
    path.write_text("name: own\nstack: stack.yaml\n" + textwrap.dedent(body))
    result = Runner(
        load_scenario(path), RunSettings(report_dir=folder / "reports"), observers=recorders()
    ).run()
    return result, list(read_journal(result.run_dir))


def _pids(journal: list[Any]) -> set[int]:
    return {int(e["pid"]) for e in _service_events(journal, "service_started")}


def _gone(pids: set[int]) -> bool:
    return all(process_state(pid) in ("", "Z") for pid in pids)


def _service_events(journal: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e["event"] for e in journal
            if e["type"] == "service_event" and e["event"]["kind"] == kind]  # fmt: skip


def test_a_slow_link_and_a_killed_service_on_the_users_own_stack(stack: Path) -> None:
    result, journal = _run(stack, """\
        load: {rate: 8/s, duration: 9s, stream: true, max_new_tokens: 8, timeout: 10s}
        faults:
          - {name: slow, kind: toxic, toxic: latency, hop: router->model,
             attributes: {latency: 300}, at: 1s, duration: 2s}
          - {name: kill, kind: process, signal: kill, target: {service: model}, at: 5s}
        slos:
          - {name: answered, sli: {kind: availability}, target: 0.5, period: run}
        expect:
          - {kind: slo_met, slo: answered}
          - {kind: event, event: service_exited, details: {service: model, code: -9}}
          - {kind: event, event: service_ready, details: {service: model}}
          - {kind: recovery, within: 3s}
        """)  # fmt: skip
    verdict = result.verdict
    assert verdict.passed, verdict.model_dump_json(indent=1)
    requests = [e for e in journal if e["type"] == "request"]
    assert len(requests) == 72
    slow, _kill = (verdict.faults[0], verdict.faults[1])
    assert slow.applied is not None and slow.reverted is not None
    # The link's 300 ms is in the first token of what was sent while it was on, and only there
    # (a request sent just before it reached the proxy after it went on: a margin of 100 ms).
    on, off = slow.applied + 0.1, slow.reverted - 0.5
    inside = [r["ttft_s"] for r in requests if on <= r["scheduled"] <= off and r["ttft_s"]]
    before = [r["ttft_s"] for r in requests if r["scheduled"] < slow.applied - 0.2]
    outside = [t for t in before if t]
    assert inside and min(inside) >= 0.3, inside
    assert outside and max(outside) < 0.3, outside
    # The kill: the process is gone, the router answers 502 while the model is down, and a new
    # process serves after the restart.
    exited = _service_events(journal, "service_exited")
    assert [e["code"] for e in exited] == [-9]
    started = [e for e in _service_events(journal, "service_started") if e["service"] == "model"]
    assert len(started) == 2 and started[0]["pid"] != started[1]["pid"]
    assert process_state(started[0]["pid"]) in ("", "Z")
    statuses = {r["status"] for r in requests if r["scheduled"] >= 5}
    assert 200 in statuses
    # Nothing left: every process the run started has ended, the lease is released.
    assert wait_until(lambda: _gone(_pids(journal)), timeout=10)
    assert not (stack / "state" / "lease.json").exists()


def test_a_damaged_model_file_is_restored_byte_for_byte_and_the_service_restarted(
    stack: Path,
) -> None:
    weights = stack / "weights" / "model.bin"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    result, journal = _run(stack, """\
        load: {rate: 4/s, duration: 6s}
        service: {api: openai-completions, model: m}
        faults:
          - {name: rot, kind: model, service: model, file: model.bin, corruption: bit_flip,
             reload: restart, at: 1s, duration: 2s}
        expect:
          - {kind: event, event: service_exited, details: {service: model, planned: true},
             min_count: 2}
        """)  # fmt: skip
    assert result.verdict.passed, result.verdict.model_dump_json(indent=1)
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before
    manifest = json.loads((result.run_dir / "model-dirs" / "model.json").read_text())
    assert manifest["sha256"] == {"model.bin": before}
    # Restarted to load the damaged file, and again after the restore.
    assert [e["planned"] for e in _service_events(journal, "service_exited")] == [True, True]
    assert wait_until(lambda: _gone(_pids(journal)), timeout=10)


def test_a_model_directory_changed_behind_the_runs_back_fails_the_run(stack: Path) -> None:
    """The directory is checksummed at the start: a file that is not as it was at the end is
    an error of the run, not a pass."""
    path = stack / "scenario.yaml"
    path.write_text("name: own\nstack: stack.yaml\nload: {rate: 2/s, duration: 3s}\n")

    class Tamper:
        def __call__(self, event: Any) -> None:
            if event.type.value == "load_started":
                (stack / "weights" / "model.bin").write_bytes(b"changed")

    result = Runner(load_scenario(path), RunSettings(report_dir=stack / "reports"),
                    observers=[*recorders(), Tamper()]).run()  # fmt: skip
    verdict = result.verdict
    assert verdict.status == "harness_error", verdict.model_dump_json(indent=1)
    assert any("model.bin changed" in e for e in verdict.harness_errors), verdict.harness_errors


def test_a_service_that_never_becomes_healthy_is_an_error_and_nothing_is_left(
    stack: Path,
) -> None:
    never = STACK.replace(
        "    restart: on-failure\n", "    health: /nowhere\n    start_timeout: 2s\n"
    )
    result, journal = _run(stack, "load: {rate: 2/s, duration: 2s}\n", never)
    verdict = result.verdict
    assert verdict.status == "harness_error"
    assert any("service model did not answer 2xx at /nowhere within 2s" in e
               for e in verdict.harness_errors), verdict.harness_errors  # fmt: skip
    assert not [e for e in journal if e["type"] == "request"]  # no load against a broken stack
    assert wait_until(lambda: _gone(_pids(journal)), timeout=10)
    assert not (stack / "state" / "lease.json").exists()


def test_a_service_that_exits_at_start_is_an_error_with_its_log(stack: Path) -> None:
    dies = STACK.replace(
        f'"{SERVER}", "--port", "${{port}}"',
        '"-c", "import sys; print(\'no GPU here\'); sys.exit(3)", "${port}"',
    )
    assert dies != STACK
    result, _journal = _run(stack, "load: {rate: 2/s, duration: 2s}\n", dies)
    errors = result.verdict.harness_errors
    assert any("service model exited with 3 before it was healthy" in e and "no GPU here" in e
               for e in errors), errors  # fmt: skip


def test_a_killed_harness_leaves_services_the_next_run_stops(stack: Path) -> None:
    path = stack / "scenario.yaml"
    path.write_text("name: own\nstack: stack.yaml\nload: {rate: 2/s, duration: 60s}\n")
    env = {**os.environ, "ICHAOS_STATE_DIR": str(stack / "state"),
           "ICHAOS_TOXIPROXY_URL": "http://127.0.0.1:9"}  # fmt: skip
    harness = subprocess.Popen(
        [sys.executable, "-m", "chaos", "run", str(path), "--report-dir", str(stack / "reports"),
         "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lease = stack / "state" / "lease.json"

    def services_held() -> list[int]:
        try:
            held = json.loads(lease.read_text())["processes"]
        except (OSError, ValueError, KeyError):
            return []
        pids = [int(p["pid"]) for p in held if str(p["what"]).startswith("service ")]
        return pids if len(pids) == 2 else []

    try:
        pids = wait_until(services_held, timeout=60, process=harness)
        harness.send_signal(signal.SIGKILL)
        harness.wait(timeout=10)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert not _gone(set(pids))  # the services outlive the harness
    # A target does not start over what is still in the lease: the repair is a step of its own.
    loaded = load_scenario(path)
    assert loaded.services is not None
    with pytest.raises(
        BackendError,
        match="an earlier run left toxiproxy-server, service model, service router behind",
    ):
        ServicesTarget(loaded.services, stack / "direct")
    # The next run's first step, each thing it does an event of the run.
    path.write_text("name: own\nstack: stack.yaml\nload: {rate: 2/s, duration: 2s}\n")
    result, journal = _run(stack, "load: {rate: 2/s, duration: 2s}\n")
    repaired = [e["text"] for e in journal if e["type"] == "repair"]
    assert sum(line.startswith("stopped service") for line in repaired) == 2, repaired
    assert wait_until(lambda: _gone(set(pids)), timeout=10)
    assert result.verdict.passed
    assert repair(stack / "state") == []


WORKER_STACK = """\
services:
  worker:
    command: ["${python}", "-m", "target_service", "worker", "--model", "primary:v1",
              "--registry", "${registry}", "--port", "${port}", "--fault-hooks",
              "--threads", "1"]
    env: {ICHAOS_ADMIN_TOKEN: "${admin_token}"}
    health: /readyz
    start_timeout: 120s
    restart_delay: 200ms
    fault_hooks: true
"""


@pytest.mark.slow
@needs_service
def test_a_gpu_fault_on_a_service_that_declares_the_hooks(
    stack: Path, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference worker as a service of a user's stack: its GPU fault hooks work there as
    on the reference stack, and the admin token ichaos gave it is written nowhere."""
    monkeypatch.setenv("ICHAOS_REGISTRY", str(registry))
    (stack / "stack.yaml").write_text(WORKER_STACK)
    path = stack / "scenario.yaml"
    path.write_text("name: own\nstack: stack.yaml\n" + textwrap.dedent("""\
        load: {rate: 4/s, duration: 14s, timeout: 10s}
        faults:
          - {name: gpu-dies, kind: gpu, fault: gpu_error, target: {service: worker}, at: 2s}
        expect:
          - {kind: event, event: service_exited, details: {service: worker, planned: false}}
          - {kind: event, event: service_ready, details: {service: worker}}
        """))  # fmt: skip
    made: list[Target] = []

    def keep(*args: Any) -> Target:
        made.append(default_target(*args))
        return made[-1]

    result = Runner(load_scenario(path), RunSettings(report_dir=stack / "reports"),
                    observers=recorders(), target_factory=keep).run()  # fmt: skip
    journal = list(read_journal(result.run_dir))
    assert result.verdict.passed, result.verdict.model_dump_json(indent=1)
    exited = _service_events(journal, "service_exited")
    assert exited and exited[0]["code"] != 0
    requests = [e for e in journal if e["type"] == "request"]
    assert any(r["status"] == 200 for r in requests if r["scheduled"] > exited[0]["t"] + 1)
    token = made[0].admin_token
    assert token
    for file in result.run_dir.rglob("*"):
        assert not file.is_file() or token.encode() not in file.read_bytes(), file
    assert wait_until(lambda: _gone(_pids(journal)), timeout=10)
