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


def test_the_readme_scenario_reference_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    inside = readme.split(START, 1)[1].split(END, 1)[0]
    assert inside.strip() == scenario_reference().strip(), (
        "the README's scenario reference is stale: paste `ichaos schema --markdown` between "
        "its markers"
    )


def test_ichaos_schema_markdown_prints_the_reference() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "schema", "--markdown"], capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout == scenario_reference()
    assert "| `rate` | text, e.g. `20/s`, `600/m` or number | **required** |" in done.stdout
