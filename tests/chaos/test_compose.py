"""A user's compose file as the system under test (stack files with `compose`): the file's
checks, the run's compose file ichaos writes from it, and runs on a real Docker-API engine with
faults on a link, a container and a bind-mounted model directory. The stack in compose_stack/
is an OpenAI-compatible router and model server on the Python standard library, so its image
builds from the base image in seconds; nothing in its compose file knows about ichaos."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos import (
    BackendError,
    Runner,
    RunResult,
    RunSettings,
    ScenarioError,
    load_scenario,
    load_stack_file,
    read_journal,
    recorders,
)
from chaos._stackfile import address_pattern
from chaos.backends._containers import LABEL_OWNER, LABEL_RUN, _owner
from chaos.backends.compose import ComposeTarget, _labelled, rewrite_links
from tests.chaos._harness import harness
from tests.chaos.conftest import killed_harness_is_swept, ours

STACK = Path(__file__).parent / "compose_stack"


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    """A copy of the stack: model faults damage the copy's model directory, never the tree's."""
    copy = tmp_path / "stack"
    shutil.copytree(STACK, copy)
    return copy


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


# -- the stack file's checks (no engine) -------------------------------------------------------


def test_the_shipped_test_stack_is_valid(stack_dir: Path) -> None:
    loaded = load_stack_file(stack_dir / "stack.yaml")
    assert loaded.compose == stack_dir / "compose.yaml"
    assert [link.hop for link in loaded.stack.links] == ["router->model"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compose": "missing.yaml"}, r"compose: no such file .*missing\.yaml"),
        ({"services": {"router": {"port": 8000}, "ghost": {"port": 1}}},
         r"services\.ghost.*has no service 'ghost' \(its services: \['model', 'router'\]\)"),
        ({"services": {"router": {"port": 8000, "command": ["x", "${port}"]},
                       "model": {"port": 8000}}},
         r"services\.model\.command.*the local backend starts every service as a process"),
        ({"services": {"router": {}, "model": {"port": 8000}}},
         r"services\.router\.port.*the port router listens on inside its container"),
        ({"services": {"router": {"port": 8000}, "model": {"port": 8001}}},
         r"links\[0\]\.from: .*never name model:8001"),
        ({"services": {"router": {"port": 8000}, "model": {"port": 8000, "model_dir": "nope"}}},
         r"services\.model\.model_dir.*no such directory"),
        ({"services": {"router": {"port": 8000}, "model": {"port": 8000, "fault_hooks": True}}},
         r"GPU fault hooks are for services ichaos starts as processes"),
    ],
)  # fmt: skip
def test_a_bad_compose_stack_file_is_refused_with_its_field(
    stack_dir: Path, change: dict[str, Any], message: str
) -> None:
    data = yaml.safe_load((stack_dir / "stack.yaml").read_text())
    data.update(change)
    path = stack_dir / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=message):
        load_stack_file(path)


def test_a_compose_service_that_would_escape_the_run_is_refused(stack_dir: Path) -> None:
    compose = yaml.safe_load((stack_dir / "compose.yaml").read_text())
    compose["services"]["model"]["container_name"] = "my-model"
    compose["services"]["router"]["network_mode"] = "host"
    (stack_dir / "compose.yaml").write_text(yaml.safe_dump(compose))
    with pytest.raises(ScenarioError) as caught:
        load_stack_file(stack_dir / "stack.yaml")
    assert "gives model a `container_name`: remove it" in str(caught.value)
    assert "gives router a `network_mode`: remove it" in str(caught.value)


def test_a_compose_stack_runs_on_the_docker_backend_only(stack_dir: Path) -> None:
    path = write(stack_dir, "local.yaml", """\
        name: on-local
        stack: stack.yaml
        load: {rate: 1/s, duration: 2s}
    """)  # fmt: skip
    with pytest.raises(ScenarioError, match="with `compose` and no commands runs on the docker"):
        load_scenario(path)


def test_links_are_rewritten_where_the_address_is_whole() -> None:
    pattern = address_pattern("model", 8000)
    service: dict[str, Any] = {
        "command": "serve --upstream http://model:8000/v1 --other mymodel:8000 model:80001",
        "entrypoint": ["run", "model:8000"],
        "environment": {"A": "http://model:8000", "B": "model.example:8000", "C": None},
    }
    assert rewrite_links(service, {pattern: "ichaos-toxiproxy:9000"}) == 3
    assert service["command"] == (
        "serve --upstream http://ichaos-toxiproxy:9000/v1 --other mymodel:8000 model:80001"
    )
    assert service["entrypoint"] == ["run", "ichaos-toxiproxy:9000"]
    assert service["environment"] == {
        "A": "http://ichaos-toxiproxy:9000", "B": "model.example:8000", "C": None,
    }  # fmt: skip
    listed: dict[str, Any] = {"environment": ["UPSTREAM=http://model:8000"]}
    assert rewrite_links(listed, {pattern: "p:1"}) == 1
    assert listed["environment"] == ["UPSTREAM=http://p:1"]


def test_the_runs_networks_and_volumes_are_its_own_whatever_compose_named_them() -> None:
    """Compose v2 resolves a file with its project's name in it (`name`, `stack_default`):
    the run's file drops those names so the run's project names them, labels what the run
    creates, and leaves an external network alone."""
    labels = {LABEL_RUN: "r1"}
    networks = _labelled(
        {"default": {"name": "stack_default"}, "mine": {"name": "fixed-net"},
         "outside": {"external": True, "name": "shared"}},
        labels, "stack", "default",
    )  # fmt: skip
    assert networks["default"] == {"labels": labels}
    assert networks["mine"] == {"name": "fixed-net", "labels": labels}
    assert networks["outside"] == {"external": True, "name": "shared"}
    assert _labelled(None, labels, None, "default") == {"default": {"labels": labels}}


# -- on a real engine --------------------------------------------------------------------------


def passing_run(scenario: Path, tmp_path: Path) -> RunResult:
    """The scenario run for real; it must pass (else the unmet expectations and errors)."""
    result = Runner(
        load_scenario(scenario), RunSettings(report_dir=tmp_path / "reports"),
        observers=recorders(),
    ).run()  # fmt: skip
    verdict = result.verdict
    unmet = [e for e in verdict.expectations if not e.passed]
    assert result.passed, f"{verdict.status}: {unmet} {verdict.harness_errors}"
    return result


FAULTS = """\
name: compose-faults
backend: docker
stack: stack.yaml
seed: 2
load: {rate: 5/s, duration: 16s, stream: true, max_new_tokens: 8, timeout: 10s}
faults:
  - {name: slow-link, kind: toxic, toxic: latency, hop: router->model,
     attributes: {latency: 400}, at: 2s, duration: 3s}
  - {name: kill-model, kind: process, signal: kill, target: {service: model}, at: 8s}
expect:
  - {kind: event, event: service_exited, details: {service: model, planned: false}}
  - {kind: event, event: service_ready, details: {service: model}}
  - {kind: recovery, within: 15s}
"""


@pytest.mark.chaos
def test_a_link_toxic_and_a_container_kill_on_a_users_compose_file(
    engine: Any, isolated: Path, stack_dir: Path, tmp_path: Path
) -> None:
    scenario = write(stack_dir, "faults.yaml", FAULTS)
    result = passing_run(scenario, tmp_path)
    journal = list(read_journal(result.run_dir))
    (ready,) = [e for e in journal if e["type"] == "target_ready"]
    run = ready["target"]["run"]
    # The run's own compose file: the router reaches the model through the link's proxy.
    written = yaml.safe_load((result.run_dir / "compose" / "compose.yaml").read_text())
    assert written["services"]["router"]["environment"]["UPSTREAM"] == (
        "http://ichaos-toxiproxy:9000"
    )
    assert written["services"]["router"]["ports"] == ["127.0.0.1::8000"]  # not 8080 on all
    # Streams sent while the link was slow waited for it; the ones before did not.
    requests = [e for e in journal if e["type"] == "request"]
    slow = [r for r in requests if 2.2 <= r["scheduled"] <= 4.6 and r["error"] is None]
    before = [r for r in requests if r["scheduled"] < 1.8 and r["error"] is None]
    assert slow and before
    assert min(r["ttft_s"] for r in slow) >= 0.4
    assert max(r["ttft_s"] for r in before) < 0.4
    # The kill ended the model's container with the signal's status; its policy restarted it.
    events = [e["event"] for e in journal if e["type"] == "service_event"]
    exits = [e for e in events if e["kind"] == "service_exited"]
    assert [(x["service"], x["code"]) for x in exits] == [("model", 137)]
    assert ours(engine, **{LABEL_RUN: run}) == [], "containers outlived the run"
    assert not (isolated / "lease.json").exists()


CORRUPT = """\
name: compose-weights
backend: docker
stack: stack.yaml
seed: 3
load: {rate: 4/s, duration: 20s, stream: true, max_new_tokens: 4, timeout: 10s}
faults:
  - {name: bad-weights, kind: model, service: model, file: weights.bin, corruption: truncate,
     reload: restart, at: 2s, duration: 6s}
expect:
  - {kind: event, event: service_exited, details: {service: model, code: 1, planned: false}}
  - {kind: recovery, within: 15s}
"""


@pytest.mark.chaos
def test_a_corrupted_bind_mounted_model_file_is_refused_then_restored(
    engine: Any, isolated: Path, stack_dir: Path, tmp_path: Path
) -> None:
    original = (stack_dir / "model" / "weights.bin").read_bytes()
    scenario = write(stack_dir, "corrupt.yaml", CORRUPT)
    result = passing_run(scenario, tmp_path)
    verdict = result.verdict
    assert (stack_dir / "model" / "weights.bin").read_bytes() == original
    sums = json.loads((result.run_dir / "model-dirs" / "model.json").read_text())
    assert set(sums["sha256"]) == {"weights.bin", "weights.sha256"}
    assert verdict.requests.by_status.get("502", 0) > 0, "the router saw the model down"
    assert not (isolated / "lease.json").exists()


@pytest.mark.chaos
def test_a_service_that_never_becomes_healthy_is_said_and_nothing_is_left(
    engine: Any, isolated: Path, stack_dir: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load((stack_dir / "stack.yaml").read_text())
    data["services"]["model"].update(health="/nope", start_timeout="3s")
    (stack_dir / "stack.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BackendError, match=r"service model did not answer 2xx at /nope within 3s"):
        ComposeTarget(load_stack_file(stack_dir / "stack.yaml"), tmp_path / "run")
    assert ours(engine, **{LABEL_OWNER: _owner()}) == []
    assert not (isolated / "lease.json").exists()


@pytest.mark.chaos
def test_what_a_killed_harness_left_of_a_compose_run_is_swept(
    engine: Any, isolated: Path, stack_dir: Path, tmp_path: Path
) -> None:
    scenario = write(stack_dir, "faults.yaml", FAULTS)
    with harness(scenario, tmp_path / "reports", tmp_path / "ichaos.log") as child:
        # Killed once its containers exist: the network and the three containers.
        killed_harness_is_swept(engine, isolated, child, 4, "the harness's compose project")


ENGINE_ACTIONS = """\
name: compose-engine-actions
backend: docker
stack: stack.yaml
seed: 4
load: {rate: 5/s, duration: 16s, stream: true, max_new_tokens: 4, timeout: 5s}
faults:
  - {name: stop-model, kind: container, action: stop, target: {service: model},
     at: 2s, duration: 3s}
  - {name: cut-model, kind: container, action: disconnect, target: {service: model},
     at: 7s, duration: 3s}
  - {name: bounce-router, kind: container, action: restart, target: {service: router}, at: 12s}
expect:
  - {kind: event, event: service_exited, details: {service: model, planned: true}}
  - {kind: recovery, within: 10s}
"""


@pytest.mark.chaos
def test_the_engine_stops_disconnects_and_restarts_compose_services(
    engine: Any, isolated: Path, stack_dir: Path, tmp_path: Path
) -> None:
    scenario = write(stack_dir, "actions.yaml", ENGINE_ACTIONS)
    result = passing_run(scenario, tmp_path)
    verdict = result.verdict
    windows = {f.name: (f.applied, f.reverted) for f in verdict.faults}
    journal = list(read_journal(result.run_dir))
    requests = [e for e in journal if e["type"] == "request"]

    def statuses(start: float, end: float) -> set[object]:
        return {r["status"] for r in requests if start <= r["scheduled"] <= end}

    stopped, cut = windows["stop-model"], windows["cut-model"]
    assert stopped[0] is not None and stopped[1] is not None
    assert cut[0] is not None and cut[1] is not None
    # While the model is stopped or off the network the router cannot reach it: its 502s.
    assert statuses(stopped[0] + 0.3, stopped[1] - 0.3) == {502}
    assert statuses(cut[0] + 0.3, cut[1] - 0.3) == {502}
    # Back on the network under its service name: the router reaches it by `model` again.
    assert statuses(cut[1] + 1.0, windows["bounce-router"][0] - 0.5) == {200}
    events = [e["event"] for e in journal if e["type"] == "service_event"]
    starts = [e for e in events if e["kind"] == "service_started" and e.get("start", 1) > 1]
    assert {e["service"] for e in starts} == {"model", "router"}
    assert ours(engine, **{LABEL_OWNER: _owner()}) == []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("{kind: container, action: stop, target: {service: model}, at: 1s}",
         "a stop needs a `duration`"),
        ("{kind: container, action: disconnect, target: {service: model}, at: 1s}",
         "a disconnect needs a `duration`"),
        ("{kind: container, action: restart, target: {service: model}, at: 1s, duration: 2s}",
         "a restart has no `duration`"),
        ("{kind: container, action: halt, target: {service: model}, at: 1s}", "action"),
        ("{kind: container, action: restart, target: {service: ghost}, at: 1s}",
         "no service named 'ghost'"),
    ],
)  # fmt: skip
def test_a_bad_container_fault_is_refused_at_its_line(
    stack_dir: Path, fault: str, message: str
) -> None:
    path = write(stack_dir, "bad.yaml", f"""\
        name: bad-container-fault
        backend: docker
        stack: stack.yaml
        load: {{rate: 1/s, duration: 5s}}
        faults:
          - {fault}
    """)  # fmt: skip
    with pytest.raises(ScenarioError, match=message) as caught:
        load_scenario(path)
    assert "bad.yaml:6" in str(caught.value)


def test_container_faults_need_the_docker_backend(tmp_path: Path) -> None:
    path = write(tmp_path, "local.yaml", """\
        name: reference-container
        load: {rate: 1/s, duration: 5s}
        faults:
          - {kind: container, action: restart, target: {pool: primary, index: 0}, at: 1s}
    """)  # fmt: skip
    with pytest.raises(
        ScenarioError, match="`kind: container` needs the docker backend, not local"
    ):
        load_scenario(path)


def test_a_stack_file_for_both_backends_says_each_problem_once(tmp_path: Path) -> None:
    example = tmp_path / "example"
    shutil.copytree(Path(__file__).parents[2] / "scenarios" / "examples" / "transformers-serve",
                    example)  # fmt: skip
    data = yaml.safe_load((example / "stack.yaml").read_text())
    data["services"]["model"]["model_dir"] = "nope"
    (example / "stack.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as caught:
        load_stack_file(example / "stack.yaml")
    assert str(caught.value).count("services.model.model_dir: no such directory") == 1
