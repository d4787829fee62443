"""Services stack files: read, checked at their lines, and what a scenario on one may ask for.

Nothing here starts a process: the runs are in test_services.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chaos import ScenarioError, load_scenario
from chaos._loading import entry_service
from chaos._protocols import Api
from chaos._reference import STACK_END, STACK_START, stack_reference
from chaos._scenario import Link, ServiceRef
from chaos._stackfile import expand, load_stack_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scenarios" / "examples" / "transformers-serve"

GOOD = """\
entry: router
services:
  model:
    command: ["${python}", "server.py", "--port", "${port}"]
    model_dir: weights
    metrics: /metrics
  router:
    command: ["${python}", "router.py", "--port", "${port}", "--upstream", "${link:model}"]
    api: openai-chat
    model: served-model
links:
  - {from: router, to: model}
"""


@pytest.fixture
def stack_dir(tmp_path: Path) -> Path:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"w" * 64)
    (tmp_path / "stack.yaml").write_text(GOOD)
    return tmp_path


def _refused(folder: Path, text: str) -> str:
    path = folder / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_stack_file(path)
    return str(caught.value)


def test_the_example_stack_file_reads_with_its_start_order_and_placeholders() -> None:
    loaded = load_stack_file(EXAMPLE / "stack.yaml")
    stack = loaded.stack
    assert stack.entry_service == "router"
    assert stack.start_order() == ["model", "router"]  # the router links to the model
    assert [link.hop for link in stack.links] == ["router->model"]
    registry = loaded.model_dir("model")
    assert registry is not None and registry.parts[-2:] == ("fallback", "v1")
    assert loaded.model_name("router") == str(registry)


def test_a_good_stack_file_reads(stack_dir: Path) -> None:
    loaded = load_stack_file(stack_dir / "stack.yaml")
    assert loaded.model_dir("model") == stack_dir / "weights"
    assert loaded.model_dir("router") is None
    assert loaded.cwd("model") == stack_dir


# name: (a change to GOOD as (old, new), the line it must be reported at, a fragment)
BAD: dict[str, tuple[tuple[str, str], int, str]] = {
    "a link to an undeclared service": (
        ("{from: router, to: model}", "{from: router, to: ghost}"),
        12,
        "no service named 'ghost'",
    ),
    "a link whose placeholder is never used": (
        ('"--upstream", "${link:model}"', '"--upstream", "http://elsewhere"'),
        12,
        "never use ${link:model}",
    ),
    "a placeholder with no link": (
        (
            '"--port", "${port}"]\n    model_dir',
            '"--port", "${port}", "${link:router}"]\n    model_dir',
        ),
        4,
        "no link from model to 'router' is declared",
    ),
    "an unknown placeholder": (
        ('"server.py", "--port", "${port}"', '"server.py", "--port", "${port}", "${prot}"'),
        4,
        "unknown placeholder ${prot}",
    ),
    "a service never told its port": (
        ('"server.py", "--port", "${port}"', '"server.py"'),
        4,
        "model is never told its port",
    ),
    "a model directory that does not exist": (
        ("model_dir: weights", "model_dir: gone"),
        5,
        "no such directory",
    ),
    "an unknown entry": (("entry: router", "entry: gateway"), 1, "no service named 'gateway'"),
    "several services and no entry": (("entry: router\n", ""), 1, "say which is the `entry`"),
    "an unset environment variable": (
        ('"server.py"', '"${env:ICHAOS_SURELY_UNSET}"'),
        4,
        "is not set in ichaos's environment",
    ),
    "${model_dir} without a model_dir": (
        ('"router.py"', '"${model_dir}"'),
        8,
        "declares no `model_dir`",
    ),
    "a bad service name": (("  model:\n", "  mo/del:\n"), 3, "invalid service name"),
    "a command that is not a list": (
        ('command: ["${python}", "server.py", "--port", "${port}"]', "command: run it"),
        4,
        "command",
    ),
    "an unknown field": (("    metrics: /metrics\n", "    metric: /metrics\n"), 6, "unknown field"),
    "a restart policy that does not exist": (
        ("    metrics: /metrics\n", "    metrics: /metrics\n    restart: sometimes\n"),
        7,
        "restart",
    ),
    "a health path that is not a path": (
        ("    metrics: /metrics\n", "    metrics: /metrics\n    health: healthz\n"),
        7,
        "health",
    ),
    "a malformed placeholder": (
        ('"server.py", "--port", "${port}"', '"server.py", "--port", "${PORT}", "${port}"'),
        4,
        "'${PORT}' is not a placeholder",
    ),
    "the admin token on the command line": (
        ('"server.py", "--port", "${port}"', '"server.py", "--port", "${port}", "${admin_token}"'),
        4,
        "${admin_token} goes in `env`",
    ),
    "fault hooks without the admin token": (
        ("    metrics: /metrics\n", "    metrics: /metrics\n    fault_hooks: true\n"),
        7,
        "fault hooks need the admin token: give it ${admin_token}",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_stack_file_is_refused_at_its_line(case: str, stack_dir: Path) -> None:
    (old, new), line, fragment = BAD[case]
    assert old in GOOD
    message = _refused(stack_dir, GOOD.replace(old, new, 1))
    assert message.startswith("invalid stack file:")
    assert f"bad.yaml:{line}:" in message and fragment in message, message


def test_links_that_form_a_cycle_are_refused(stack_dir: Path) -> None:
    text = GOOD.replace('"server.py", "--port", "${port}"',
                        '"server.py", "--port", "${port}", "${link:router}"')  # fmt: skip
    text += "  - {from: model, to: router}\n"
    assert "the links form a cycle" in _refused(stack_dir, text)


def test_a_link_declared_twice_is_refused(stack_dir: Path) -> None:
    message = _refused(stack_dir, GOOD + "  - {from: router, to: model}\n")
    assert "bad.yaml:13:" in message and "declared twice" in message


def test_placeholders_expand_and_dollars_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICHAOS_TEST_TOKEN", "t0k")
    text = "--port=${port} up=${link:model} key=${env:ICHAOS_TEST_TOKEN} cost=$$5 $HOME"
    links = {"model": "http://127.0.0.1:9"}
    assert expand(text, {"port": "81"}, links) == (
        "--port=81 up=http://127.0.0.1:9 key=t0k cost=$5 $HOME"
    )
    for bad in ("${link:other}", "${nothing}", "${env:ICHAOS_SURELY_UNSET}"):
        with pytest.raises(ValueError, match=r"nothing to fill|is not set"):
            expand(bad, {"port": "81"}, links)


def _scenario(folder: Path, body: str) -> Path:
    path = folder / "scenario.yaml"
    path.write_text("name: s\nstack: stack.yaml\nload: {rate: 2/s, duration: 10s}\n" + body)
    return path


def test_a_scenario_names_links_and_services_of_its_stack(stack_dir: Path) -> None:
    loaded = load_scenario(_scenario(stack_dir, textwrap.dedent("""\
        faults:
          - {kind: toxic, toxic: latency, hop: router->model, attributes: {latency: 50}, at: 1s}
          - {kind: partition, hop: {from: router, to: model}, at: 2s, duration: 1s}
          - {kind: process, signal: kill, target: {service: model}, at: 3s}
          - {kind: model, service: model, file: model.bin, corruption: truncate,
             reload: restart, at: 4s, duration: 2s}
        metrics:
          sources: [{name: model, service: model}]
          series: [{name: q, metric: queue_depth}]
        """)))  # fmt: skip
    assert loaded.services is not None and loaded.services.path == stack_dir / "stack.yaml"
    faults = loaded.scenario.faults
    assert faults[0].hop == Link.model_validate({"from": "router", "to": "model"})  # type: ignore[union-attr]
    assert faults[1].hop == faults[0].hop  # type: ignore[union-attr]
    assert faults[2].target == ServiceRef(service="model")  # type: ignore[union-attr]
    # The entry service's API and model stand in for the scenario's `service` block.
    assert loaded.scenario.service.api is Api.OPENAI_CHAT
    assert loaded.scenario.service.model == "served-model"


def test_the_scenarios_own_service_block_wins(stack_dir: Path) -> None:
    loaded = load_scenario(_scenario(stack_dir, "service: {api: openai-completions, model: x}\n"))
    assert loaded.services is not None
    assert entry_service(loaded.scenario, loaded.services) == loaded.scenario.service
    assert (loaded.scenario.service.api, loaded.scenario.service.model) == (
        Api.OPENAI_COMPLETIONS,
        "x",
    )


# name: (scenario text after the head, the line, a fragment)
REFUSED: dict[str, tuple[str, int, str]] = {
    "a link the stack does not declare": (
        "faults:\n  - {kind: partition, hop: model->router, at: 1s}\n",
        5,
        "declares no link model->router (links: ['router->model'])",
    ),
    "a pool's hop": (
        "faults:\n  - {kind: partition, hop: 'primary[0]', at: 1s}\n",
        5,
        "has no pools or gateway",
    ),
    "the gateway": (
        "faults:\n  - {kind: process, signal: kill, target: {gateway: true}, at: 1s}\n",
        5,
        "the gateway: a services stack file has no pools",
    ),
    "an undeclared service": (
        "faults:\n  - {kind: process, signal: kill, target: {service: db}, at: 1s}\n",
        5,
        "no service named 'db'",
    ),
    "a GPU fault on a service without fault hooks": (
        "faults:\n  - {kind: gpu, fault: hang, target: {service: model}, at: 1s, duration: 1s}\n",
        5,
        "service model declares no `fault_hooks`",
    ),
    "a GPU fault on a pool": (
        "faults:\n  - {kind: gpu, fault: hang, target: {pool: primary}, at: 1s, duration: 1s}\n",
        5,
        "every primary: a services stack file has no pools",
    ),
    "a model fault on a service without a model_dir": (
        "faults:\n  - {kind: model, service: router, reload: none, at: 1s}\n",
        5,
        "service router declares no `model_dir`",
    ),
    "a registry model": (
        "faults:\n  - {kind: model, model: 'primary:v1', reload: none, at: 1s}\n",
        5,
        "registry model primary:v1",
    ),
    "an admin reload of a service": (
        "faults:\n  - {kind: model, service: model, reload: admin, at: 1s}\n",
        5,
        "not `admin`",
    ),
    "metrics of a service that declares none": (
        "metrics:\n  sources: [{name: r, service: router}]\n  series: [{name: q, metric: q}]\n",
        5,
        "declares no `metrics` path",
    ),
    "metrics of replicas": (
        "metrics:\n  sources: [{name: r, replicas: primary}]\n  series: [{name: q, metric: q}]\n",
        5,
        "has no pools: scrape a `service`",
    ),
    "a network partition of a link": (
        "faults:\n  - {kind: partition, hop: router->model, method: network, at: 1s}\n",
        5,
        "a link has none: use `method: proxy`",
    ),
    "the docker backend": ("backend: docker\n", 4, "runs on the local backend, not docker"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_scenario_asking_what_its_stack_lacks_is_refused(case: str, stack_dir: Path) -> None:
    body, line, fragment = REFUSED[case]
    with pytest.raises(ScenarioError) as caught:
        load_scenario(_scenario(stack_dir, body))
    message = str(caught.value)
    assert f"scenario.yaml:{line}:" in message and fragment in message, message


@pytest.mark.parametrize(
    "body",
    [
        "faults:\n  - {kind: partition, hop: router->model, at: 1s}\n",
        "faults:\n  - {kind: process, signal: kill, target: {service: model}, at: 1s}\n",
        "faults:\n  - {kind: model, service: model, reload: none, at: 1s}\n",
    ],
    ids=["link", "service", "service model"],
)
def test_the_reference_stack_refuses_services_and_links(body: str, tmp_path: Path) -> None:
    path = tmp_path / "scenario.yaml"
    path.write_text("name: s\nload: {rate: 2/s, duration: 10s}\n" + body)
    with pytest.raises(ScenarioError, match="services and links are a services stack file's"):
        load_scenario(path)


def test_validate_checks_stack_files_as_stack_files(stack_dir: Path) -> None:
    bad = stack_dir / "bad.yaml"
    bad.write_text(GOOD.replace("to: model}", "to: ghost}"))
    ok = subprocess.run(
        [sys.executable, "-m", "chaos", "validate", str(stack_dir / "stack.yaml")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "stack file, services model, router; entry router; router->model" in ok.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "chaos", "validate", str(bad)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "bad.yaml:12:" in refused.stderr and "no service named 'ghost'" in refused.stderr


def test_the_docs_stack_reference_is_the_generated_one() -> None:
    page = (ROOT / "docs" / "own-stack.md").read_text(encoding="utf-8")
    inside = page.split(STACK_START, 1)[1].split(STACK_END, 1)[0]
    assert inside.strip() == stack_reference().strip(), (
        "docs/own-stack.md is stale: paste `ichaos schema stack --markdown` between its markers"
    )
    rows = [line for line in stack_reference().splitlines() if line.startswith("| `")]
    assert rows and not [r for r in rows if r.rstrip().endswith("|  |")]
