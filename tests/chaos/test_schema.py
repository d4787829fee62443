"""The editor schemas accept every shipped scenario and SLO file and refuse what the loader
refuses; ``ichaos schema`` prints or writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chaos._reference import END, START, scenario_reference
from chaos._schema import scenario_schema, slo_schema

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
SLO_FILES = sorted((ROOT / "slo" / "examples").glob("*.yaml"))


def problems(schema: dict[str, Any], document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_schemas_are_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(scenario_schema())
    jsonschema.Draft202012Validator.check_schema(slo_schema())


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_matches_the_schema(path: Path) -> None:
    assert problems(scenario_schema(), yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", SLO_FILES, ids=lambda p: p.name)
def test_every_shipped_slo_file_matches_the_schema(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        assert problems(slo_schema(), document) == []


def test_the_scenario_schema_refuses_what_the_loader_refuses() -> None:
    bad = {
        "name": "x",
        "colour": "red",
        "load": {"rate": "20 per second", "duration": "soon"},
        "faults": [{"kind": "meteor", "at": "1s"}, {"kind": "partition", "hop": "primary[x]",
                                                     "at": "1s"}],
    }  # fmt: skip
    found = problems(scenario_schema(), bad)
    assert any("'colour' was unexpected" in p for p in found)
    for where in ("['load', 'rate']", "['load', 'duration']", "['faults', 0]", "['faults', 1]"):
        assert any(p.startswith(where) for p in found), where


def test_the_slo_schema_refuses_a_bad_status_and_period() -> None:
    bad = {"name": "a", "sli": {"kind": "availability", "bad": ["6xx"]}, "target": 0.99,
           "period": "a fortnight"}  # fmt: skip
    assert problems(slo_schema(), bad) != []


def test_ichaos_schema_prints_or_writes(tmp_path: Path) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "chaos", "schema", "slo"], capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert json.loads(printed.stdout)["title"] == "ichaos SLO document"
    out = tmp_path / "scenario.schema.json"
    written = subprocess.run(
        [sys.executable, "-m", "chaos", "schema", "-o", str(out)], capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    assert written.stdout.strip() == str(out)
    assert json.loads(out.read_text())["title"] == "ichaos scenario"
    refused = subprocess.run(
        [sys.executable, "-m", "chaos", "schema", "gameday"], capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "invalid choice: 'gameday'" in refused.stderr


def test_the_docs_scenario_reference_is_the_generated_one() -> None:
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    inside = page.split(START, 1)[1].split(END, 1)[0]
    assert inside.strip() == scenario_reference().strip(), (
        "docs/reference.md is stale: paste `ichaos schema --markdown` between its markers"
    )


@pytest.mark.parametrize("schema", [scenario_schema, slo_schema], ids=["scenario", "slo"])
def test_every_field_says_what_it_means(schema: Any) -> None:
    """The reference is generated from the models: a field without a description would be a
    row with an empty "meaning" cell."""
    root = schema()
    models = {"(root)": root, **root.get("$defs", {})}
    silent = [
        f"{name}.{field}"
        for name, model in models.items()
        for field, node in model.get("properties", {}).items()
        if not str(node.get("description", "")).strip()
    ]
    assert silent == []
    rows = [line for line in scenario_reference().splitlines() if line.startswith("| `")]
    assert rows and not [r for r in rows if r.rstrip().endswith("|  |")]


def test_ichaos_schema_markdown_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "schema", "--markdown"], capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout == scenario_reference()
    assert "| `rate` | text, e.g. `20/s`, `600/m` or number | **required** |" in done.stdout


def _with(path: str, value: Any) -> dict[str, Any]:
    """A valid scenario with one value set at ``path`` (dotted, list indices as numbers)."""
    document: dict[str, Any] = {
        "name": "agree",
        "load": {"rate": "2/s", "duration": "10s"},
        "faults": [{"kind": "partition", "hop": "primary[0]", "at": "1s"}],
        "steady_state": {"probes": [{"kind": "http", "name": "p", "path": "/healthz"}]},
        "slos": [{"name": "s", "sli": {"kind": "availability"}, "target": 0.9, "period": "1h"}],
    }
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return document


AGREEMENT = [
    ("load.max_new_tokens", 8, True),
    ("load.max_new_tokens", "8", False),
    ("load.max_new_tokens", True, False),
    ("load.max_new_tokens", 0, False),
    ("load.rate", 20, True),
    ("load.rate", "20/s", True),
    ("load.rate", "20", False),
    ("load.rate", -1, False),
    ("load.duration", "10s", True),
    ("load.duration", 10, False),
    ("load.duration", "10 s", False),
    ("load.duration", "\uff11\uff10s", False),
    ("load.user_share", 0.5, True),
    ("load.user_share", "0.5", False),
    ("faults.0.hop", "primary[1]", True),
    ("faults.0.hop", "primary[0] ", False),
    ("faults.0.hop", "primary[\uff10]", False),
    ("faults.0.hop", {"pool": "primary", "index": 1}, True),
    ("faults.0.hop", {"pool": "primary", "index": "0"}, False),
    ("faults.0.hop", {"pool": "primary", "index": -1}, False),
    ("faults.0.hop", {"pool": "primary", "index": []}, False),
    ("faults.0.hop", {"pool": "primary", "colour": 1}, False),
    (
        "faults.0",
        {
            "kind": "toxic",
            "toxic": "latency",
            "hop": "client",
            "at": "1s",
            "attributes": {"latency": 300},
        },
        True,
    ),
    (
        "faults.0",
        {
            "kind": "toxic",
            "toxic": "latency",
            "hop": "client",
            "at": "1s",
            "attributes": {"latency": "300"},
        },
        False,
    ),
    (
        "faults.0",
        {
            "kind": "toxic",
            "toxic": "latency",
            "hop": "client",
            "at": "1s",
            "attributes": {"latency": -5},
        },
        False,
    ),
    (
        "faults.0",
        {
            "kind": "toxic",
            "toxic": "latency",
            "hop": "client",
            "at": "1s",
            "attributes": {"latency": 10**21},
        },
        False,
    ),
    (
        "faults.0",
        {"kind": "process", "signal": "kill", "target": {"gateway": True}, "at": "1s"},
        True,
    ),
    ("faults.0", {"kind": "process", "signal": "kill", "target": {}, "at": "1s"}, False),
    ("faults.0.name", "cut", True),
    ("faults.0.name", "..", False),
    ("faults.0.name", "", False),
    ("name", "a" * 64, True),
    ("name", "a" * 65, False),
    ("seed", 3, True),
    ("seed", "3", False),
    ("seed", 1.5, False),
    ("steady_state.probes.0.status", 204, True),
    ("steady_state.probes.0.status", -1, False),
    ("steady_state.probes.0.status", "200", False),
    ("slos.0.period", "run", True),
    ("slos.0.period", "Run", False),
    ("slos.0.target", 0.99, True),
    ("slos.0.target", "0.99", False),
]


@pytest.mark.parametrize(("path", "value", "valid"), AGREEMENT, ids=lambda v: repr(v)[:40])
def test_the_schema_and_the_models_agree(
    tmp_path: Path, path: str, value: Any, valid: bool
) -> None:
    from chaos import ScenarioError, load_scenario

    document = _with(path, value)
    schema_says = not problems(scenario_schema(), document)
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    try:
        load_scenario(file)
        models_say = True
    except ScenarioError:
        models_say = False
    assert (schema_says, models_say) == (valid, valid)
