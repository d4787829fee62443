"""The docker backend and deploy/: the compose file's wiring, clear errors without an engine, and
shipped scenarios run for real as containers on a Docker-API engine (podman here, served by
deploy/podman-engine.sh, which ./dev test runs where it can; Docker elsewhere). Without an engine
the engine tests are skipped with the reason and how to get one."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from chaos import (
    Backend,
    DockerTarget,
    EngineUnavailable,
    Runner,
    RunSettings,
    ScenarioError,
    Toxic,
    ToxicType,
    ToxiproxyClient,
    load_scenario,
    read_journal,
    recorders,
    wait_until,
)
from chaos.backends._containers import LABEL_OWNER, LABEL_RUN, _owner, sweep
from tests.chaos._harness import harness
from tests.chaos.conftest import killed_harness_is_swept, ours
from tests.conftest import needs_service

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCENARIOS = ROOT / "scenarios"


# -- deploy/: what a user gets with `docker compose up` ----------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_wires_clients_and_every_worker_through_toxiproxy() -> None:
    services = compose()["services"]
    proxies = {p["name"]: p for p in json.loads((DEPLOY / "toxiproxy.json").read_text())}
    replicas = json.loads((DEPLOY / "replicas.json").read_text())
    workers = {name: s for name, s in services.items() if s["command"][0] == "worker"}
    # Every replica the gateway knows is a worker service, reached through its own proxy.
    assert len(replicas) == len(workers) == len(proxies) - 1
    for replica in replicas:
        service = f"{replica['pool']}-{replica['index']}"
        command = workers[service]["command"]
        assert command[command.index("--model") + 1] == replica["model"]
        port = replica["url"].removeprefix("http://toxiproxy:")
        (proxy,) = [p for p in proxies.values() if p["listen"] == f"0.0.0.0:{port}"]
        assert proxy["upstream"] == f"{service}:8000"
    assert proxies["client"]["upstream"] == "gateway:8000"
    assert "127.0.0.1:${ICHAOS_CLIENT_PORT:-8080}:8080" in services["toxiproxy"]["ports"]
    # The pools match the shipped stack file the gateway reads.
    stack = yaml.safe_load((ROOT / "target_service" / "data" / "stack.yaml").read_text())
    for pool, spec in stack["pools"].items():
        assert sum(r["pool"] == pool for r in replicas) == spec["replicas"]
        assert all(r["model"] == spec["model"] for r in replicas if r["pool"] == pool)
    # Restarts, health checks and the files mounted all exist.
    gateway = services["gateway"]
    assert set(gateway["depends_on"]) == {"toxiproxy", *workers}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert name == "toxiproxy" or "healthcheck" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    assert "models" in compose()["volumes"]


def test_compose_config_is_accepted_by_compose() -> None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], check=False, capture_output=True, timeout=60)
        if probe.returncode != 0:
            continue
        env = {**os.environ, "ICHAOS_ADMIN_TOKEN": "test-token"}
        done = subprocess.run(
            [*command, "-f", str(DEPLOY / "compose.yaml"), "config"],
            check=False, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "primary-0" in done.stdout and "test-token" in done.stdout
        missing = subprocess.run(
            [*command, "-f", str(DEPLOY / "compose.yaml"), "config"],
            check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "ICHAOS_ADMIN_TOKEN": ""},
        )  # fmt: skip
        assert missing.returncode != 0 and "ICHAOS_ADMIN_TOKEN" in missing.stderr
        return
    pytest.skip("no `docker compose` or `docker-compose`: ./dev test installs docker-compose")


def scenario_text(tmp_path: Path, fault: str, backend: str = "docker") -> Path:
    path = tmp_path / "cut.yaml"
    path.write_text(
        f"name: cut\nbackend: {backend}\nload: {{rate: 2/s, duration: 2s}}\nfaults:\n"
        f"  - {{kind: partition, at: 1s, duration: 1s, {fault}}}\n"
    )
    return path


def test_network_partitions_cut_replicas_on_the_docker_backend_only(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="client hop has no container"):
        load_scenario(scenario_text(tmp_path, "hop: client, method: network"))
    cut = "hop: {pool: primary, index: 0}, method: network"
    replica = load_scenario(scenario_text(tmp_path, cut))
    assert replica.scenario.unsupported_by(Backend.DOCKER) is None
    assert "needs the docker backend" in str(replica.scenario.unsupported_by(Backend.LOCAL))
    with pytest.raises(ScenarioError, match="`method: network` needs the docker backend"):
        load_scenario(scenario_text(tmp_path, cut, backend="local"))


@needs_service
def test_without_an_engine_the_backend_says_how_to_get_one(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(EngineUnavailable, match=r"podman-engine\.sh start"):
        DockerTarget(None, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", str(SCENARIOS / "baseline.yaml"),
         "--backend", "docker", "--report-dir", str(tmp_path / "reports")],
        check=False, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"},
    )  # fmt: skip
    assert done.returncode == 3, done.stdout + done.stderr
    assert "podman-engine.sh" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (isolated / "lease.json").exists(), "nothing was started, nothing to sweep"


# -- on a real engine ------------------------------------------------------------------------


@needs_service
@pytest.mark.chaos
@pytest.mark.parametrize(
    "name", ["baseline", "worker-kill", "worker-latency", "corrupted-checksum", "gpu-error"]
)
def test_scenarios_hold_on_the_docker_backend(
    name: str, engine: Any, isolated: Path, tmp_path: Path
) -> None:
    result = Runner(
        load_scenario(SCENARIOS / f"{name}.yaml"),
        RunSettings(report_dir=tmp_path / "reports", backend=Backend.DOCKER),
        observers=recorders(),
    ).run()
    verdict = result.verdict
    unmet = [e for e in verdict.expectations if not e.passed]
    assert result.passed, f"{verdict.status}: {unmet} {verdict.harness_errors}"
    assert verdict.backend == "docker"
    (ready,) = [e for e in read_journal(result.run_dir) if e["type"] == "target_ready"]
    run = ready["target"]["run"]
    assert ours(engine, **{LABEL_RUN: run}) == [], "containers outlived the run"
    assert not (isolated / "lease.json").exists()
    if name in ("worker-kill", "gpu-error"):
        assert verdict.service_events["worker_restarted"] >= 1
    if name == "corrupted-checksum":
        assert verdict.service_events["model_load_refused"] >= 1
        assert not any((isolated / "model-backups").glob("*"))


@needs_service
@pytest.mark.chaos
def test_what_a_killed_run_left_is_swept(engine: Any, isolated: Path, tmp_path: Path) -> None:
    scenario, reports = SCENARIOS / "baseline.yaml", tmp_path / "reports"
    with harness(scenario, reports, tmp_path / "ichaos.log", "--backend", "docker") as child:
        # Killed once its Toxiproxy and a worker run: mid-way through starting the stack.
        killed_harness_is_swept(
            engine, isolated, child, 3, "the harness's network and first containers"
        )


@pytest.mark.chaos
def test_resources_of_a_dead_harness_are_swept_without_a_lease(engine: Any) -> None:
    from chaos.backends.docker import ensure_image, toxiproxy_context

    image = ensure_image(engine, "ichaos-toxiproxy", toxiproxy_context(), "Dockerfile", None)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          check=True, capture_output=True, text=True)  # fmt: skip
    host, namespace, _pid, _started = _owner().split(":")
    dead = f"{host}:{namespace}:{gone.stdout.strip()}:1"  # a pid that exited: nobody now
    live = _owner()
    made = []
    for owner in (dead, live):
        run = f"sweeptest{len(made)}"
        labels = {LABEL_RUN: run, LABEL_OWNER: owner}
        network = engine.networks.create(f"ichaos-{run}", labels=labels)
        engine.containers.run(image, name=f"ichaos-{run}-toxiproxy", detach=True,
                              network=network.name, labels=labels)  # fmt: skip
        made.append(run)
    try:
        removed = sweep(engine, log=lambda _m: None)
        assert {f"container ichaos-{made[0]}-toxiproxy", f"network ichaos-{made[0]}"} <= set(
            removed
        )
        assert ours(engine, **{LABEL_RUN: made[0]}) == []
        # A live harness's resources are never touched.
        assert sorted(ours(engine, **{LABEL_RUN: made[1]})) == [
            f"ichaos-{made[1]}",
            f"ichaos-{made[1]}-toxiproxy",
        ]
    finally:
        for run in made:
            sweep(engine, run=run, log=lambda _m: None)


FAULTS = """\
name: container-faults
backend: docker
seed: 3
load: {rate: 8/s, duration: 18s}
faults:
  - {name: freeze, kind: process, signal: pause, target: {pool: primary, index: 0},
     at: 3s, duration: 4s}
  - {name: unplug, kind: partition, method: network, hop: {pool: primary, index: 1},
     at: 10s, duration: 4s}
  - {name: bounce, kind: container, action: restart, target: {pool: fallback, index: 0},
     at: 15s}
expect:
  - {kind: status, status: "2xx", min_share: 0.95}
  - {kind: event, event: replica_down}
  - {kind: recovery, within: 5s}
"""


@needs_service
@pytest.mark.chaos
def test_pause_partition_and_restart_are_applied_and_undone_on_containers(
    engine: Any, isolated: Path, tmp_path: Path
) -> None:
    path = tmp_path / "container-faults.yaml"
    path.write_text(FAULTS)
    result = Runner(
        load_scenario(path), RunSettings(report_dir=tmp_path / "reports"), observers=recorders()
    ).run()
    verdict = result.verdict
    unmet = [e for e in verdict.expectations if not e.passed]
    assert result.passed, f"{verdict.status}: {unmet} {verdict.harness_errors}"
    journal = list(read_journal(result.run_dir))
    applied = [e["fault"] for e in journal if e["type"] == "fault_applied"]
    reverted = [e["fault"] for e in journal if e["type"] == "fault_reverted"]
    assert applied == reverted == ["freeze", "unplug", "bounce"]
    # While unplugged, primary[1] was out of the gateway's rotation; paused, primary[0] was.
    events = [e["event"] for e in journal if e["type"] == "service_event"]
    downs = [e for e in events if e["kind"] == "replica_down"]
    assert {(e["pool"], e["index"]) for e in downs} >= {
        ("primary", 0),
        ("primary", 1),
    }
    # The engine's restart of the fallback worker, seen as the supervisor's would be.
    restarts = [e for e in events if e["kind"] == "worker_restarted"]
    assert [(e["pool"], e["index"]) for e in restarts] == [("fallback", 0)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.chaos
def test_compose_up_serves_through_toxiproxy(engine: Any, tmp_path: Path) -> None:
    from chaos.backends.docker import ensure_image, service_context, toxiproxy_context

    command = next(
        (c for c in (["docker", "compose"], ["docker-compose"]) if shutil.which(c[0]) and
         subprocess.run([*c, "version"], check=False, capture_output=True).returncode == 0),
        None,
    )  # fmt: skip
    if command is None:
        pytest.skip("no `docker compose` or `docker-compose`: ./dev test installs docker-compose")
    # The images as the docker backend builds them (it passes the host's CA bundle to pip).
    client_port, gateway_port, api_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "ICHAOS_ADMIN_TOKEN": "compose-test-token",
        "ICHAOS_SERVICE_IMAGE": ensure_image(
            engine, "ichaos-service", service_context(), "deploy/Dockerfile", None
        ),
        "ICHAOS_TOXIPROXY_IMAGE": ensure_image(
            engine, "ichaos-toxiproxy", toxiproxy_context(), "Dockerfile", None
        ),
        "ICHAOS_CLIENT_PORT": str(client_port),
        "ICHAOS_GATEWAY_PORT": str(gateway_port),
        "ICHAOS_TOXIPROXY_PORT": str(api_port),
    }
    compose_cmd = [*command, "-f", str(DEPLOY / "compose.yaml"), "-p", f"ichaos-{os.getpid()}"]
    try:
        up = subprocess.run([*compose_cmd, "up", "-d", "--no-build"], check=False,
                            capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
        assert up.returncode == 0, up.stderr
        ask = {"prompt": "hello", "max_new_tokens": 4}

        def answered(model: str | None = "primary") -> bool:
            try:
                reply = httpx.post(f"http://127.0.0.1:{client_port}/v1/generate", json=ask,
                                   timeout=10)  # fmt: skip
            except httpx.HTTPError:
                return False
            return reply.status_code == 200 and model in (None, reply.json()["model"])

        wait_until(answered, timeout=240, interval=1, message="compose stack answering")
        with ToxiproxyClient(f"http://127.0.0.1:{api_port}") as api:
            assert set(api.proxies()) == {"client", "primary-0", "primary-1", "canary-0",
                                          "fallback-0"}  # fmt: skip
            api.add_toxic("client", Toxic(name="slow", type=ToxicType.LATENCY,
                                          attributes={"latency": 500}))  # fmt: skip
            started = time.monotonic()
            # Any served answer: the stack's canary share may answer this one request.
            assert answered(model=None)
            assert time.monotonic() - started >= 0.5
            api.remove_toxic("client", "slow")
        state = httpx.get(f"http://127.0.0.1:{gateway_port}/admin/state", timeout=10,
                          headers={"X-Admin-Token": "compose-test-token"})  # fmt: skip
        assert state.status_code == 200
        assert len(state.json()["pools"]["primary"]["replicas"]) == 2
    finally:
        subprocess.run([*compose_cmd, "down", "-v"], check=False, capture_output=True,
                       env=env, timeout=180)  # fmt: skip


def test_engine_events_are_relayed_once_and_never_from_before_the_stream() -> None:
    """podman's stream delivers events again, and older ones, when its events log rotates:
    the relay passes each event of the run on once, none from before it began following."""
    from chaos.backends._containers import follow_run_events

    now = time.time_ns()
    labels = {LABEL_RUN: "r1"}

    def event(action: str, at_ns: int, run: str = "r1") -> dict[str, Any]:
        return {"Action": action, "id": "c1", "timeNano": at_ns,
                "Actor": {"ID": "c1", "Attributes": {**labels, LABEL_RUN: run}}}  # fmt: skip

    die = event("die", now + 2_000_000_000)
    stream = [
        event("start", now - 60_000_000_000),  # the run's `up`, a minute before: replayed
        event("start", now + 1_000_000_000),
        die,
        event("die", now + 3_000_000_000, run="other"),
        dict(die),  # the same event again
        event("start", now + 4_000_000_000),
    ]

    class Client:
        def events(self, **_: Any) -> list[dict[str, Any]]:
            return stream

    got: list[tuple[str, float]] = []
    follow_run_events(Client(), "r1", lambda action, _a, when: got.append((action, when)))
    wait_until(
        lambda: not any(t.name == "ichaos-events-r1" for t in threading.enumerate()),
        timeout=10, message="the relay through the whole stream",
    )  # fmt: skip
    assert [(a, round(w - now / 1e9)) for a, w in got] == [("start", 1), ("die", 2), ("start", 4)]
