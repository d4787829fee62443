"""The docker backend and deploy/: the compose file's wiring, clear errors without an engine, and
shipped scenarios run for real as containers on a Docker-API engine (podman here, served by
deploy/podman-engine.sh, which ./dev test runs where it can; Docker elsewhere). Without an engine
the engine tests are skipped with the reason and how to get one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import (
    Backend,
    BackendError,
    DockerTarget,
    EngineUnavailable,
    Runner,
    RunSettings,
    ScenarioError,
    load_scenario,
    read_journal,
    repair,
    wait_until,
)
from chaos._docker import LABEL_OWNER, LABEL_RUN, connect, sweep
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
    assert "127.0.0.1:8080:8080" in services["toxiproxy"]["ports"]
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


def test_without_an_engine_the_backend_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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


# -- on a real engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    try:
        client = connect()
    except BackendError as exc:
        pytest.skip(f"no Docker-API engine: {exc}")
    yield client
    client.close()


def ours(client: Any, **labels: str) -> list[str]:
    wanted = [f"{k}={v}" for k, v in labels.items()] or [LABEL_RUN]
    found = [c.name for c in client.containers.list(all=True, filters={"label": wanted})]
    found += [n.name for n in client.networks.list(filters={"label": wanted})]
    return found


@needs_service
@pytest.mark.chaos
@pytest.mark.parametrize(
    "name", ["baseline", "worker-kill", "worker-latency", "corrupted-checksum"]
)
def test_scenarios_hold_on_the_docker_backend(
    name: str, engine: Any, isolated: Path, tmp_path: Path
) -> None:
    result = Runner(
        load_scenario(SCENARIOS / f"{name}.yaml"),
        RunSettings(report_dir=tmp_path / "reports", backend=Backend.DOCKER),
    ).run()
    verdict = result.verdict
    unmet = [e for e in verdict["expectations"] if not e["passed"]]
    assert result.passed, f"{verdict['status']}: {unmet} {verdict['harness_errors']}"
    assert verdict["backend"] == "docker"
    (ready,) = [e for e in read_journal(result.run_dir) if e["type"] == "target_ready"]
    run = ready["target"]["run"]
    assert ours(engine, **{LABEL_RUN: run}) == [], "containers outlived the run"
    assert not (isolated / "lease.json").exists()
    if name == "worker-kill":
        assert verdict["service_events"]["worker_restarted"] >= 1
    if name == "corrupted-checksum":
        assert verdict["service_events"]["model_load_refused"] >= 1
        assert not any((isolated / "model-backups").glob("*"))


@needs_service
@pytest.mark.chaos
def test_what_a_killed_run_left_is_swept(engine: Any, isolated: Path, tmp_path: Path) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-m", "chaos", "run", str(SCENARIOS / "baseline.yaml"),
         "--backend", "docker", "--report-dir", str(tmp_path / "reports"), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip
    owner = f"{os.uname().nodename}:{harness.pid}"
    try:
        # Killed once its Toxiproxy and a worker run: mid-way through starting the stack.
        wait_until(
            lambda: len(ours(engine, **{LABEL_OWNER: owner})) >= 3, timeout=600, interval=0.5,
            message="the harness's network and first containers",
        )  # fmt: skip
        harness.send_signal(signal.SIGKILL)
        harness.wait(timeout=10)
    finally:
        if harness.poll() is None:
            harness.kill()
    left = ours(engine, **{LABEL_OWNER: owner})
    assert left, "a SIGKILLed harness cannot have removed its containers"
    assert (isolated / "lease.json").exists()

    # The next run's first step: everything whose harness is dead goes.
    removed = sweep(engine, log=lambda _m: None)
    assert set(left) <= {r.split(" ", 1)[1] for r in removed}
    assert ours(engine, **{LABEL_OWNER: owner}) == []
    repair(isolated, log=lambda _m: None)
    assert not (isolated / "lease.json").exists()
