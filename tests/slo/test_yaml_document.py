"""The generic YAML loader other ichaos files (stack files, scenarios) are read with."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from slo import Duration, SLOFileError, load_yaml_document, parse_yaml_document


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    wait: Duration = 1.0


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "x"
    items: list[Inner] = []


def test_valid_document_and_empty_document() -> None:
    doc = parse_yaml_document("name: a\nitems:\n  - wait: 500ms\n", Outer)
    assert doc == Outer(name="a", items=[Inner(wait=0.5)])
    assert parse_yaml_document("", Outer) == Outer()


def test_every_problem_has_file_line_and_field() -> None:
    text = "name: a\nitems:\n  - wait: 5\n  - colour: red\n"
    with pytest.raises(SLOFileError) as info:
        parse_yaml_document(text, Outer, source="f.yaml")
    described = [p.describe() for p in info.value.problems]
    assert described == [
        "f.yaml:3: items[0].wait: a duration needs a unit: write e.g. 5ms or 5s",
        "f.yaml:4: items[1].colour: unknown field",
    ]


def test_duplicate_keys_and_several_documents_are_refused() -> None:
    with pytest.raises(SLOFileError, match=r"f.yaml:2: name: duplicate key"):
        parse_yaml_document("name: a\nname: b\n", Outer, source="f.yaml")
    with pytest.raises(SLOFileError, match="expected one YAML document"):
        parse_yaml_document("name: a\n---\nname: b\n", Outer)


def test_broken_yaml_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SLOFileError, match=r"f.yaml:1: invalid YAML"):
        parse_yaml_document("items: [", Outer, source="f.yaml")
    with pytest.raises(SLOFileError, match="cannot read"):
        load_yaml_document(tmp_path / "absent.yaml", Outer)
    path = tmp_path / "ok.yaml"
    path.write_text("name: from-file\n")
    assert load_yaml_document(path, Outer).name == "from-file"
