"""JSON Schemas of scenario and SLO files, for editors (yaml-language-server, VS Code, ...).

Generated from the same pydantic models that validate the files, so they cannot drift; the
types a file writes as text (``30s``, ``20/s``, ``5xx``, ``30d``) carry their own schemas. The
SLO schema accepts the native form and, loosely, an OpenSLO v1 ``kind: SLO`` document (whose
supported fields the loader checks).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from slo import SLODocument

from ._scenario import Scenario
from ._stackfile import StackFile

_DRAFT = "https://json-schema.org/draft/2020-12/schema"


class SchemaKind(StrEnum):
    SCENARIO = "scenario"
    SLO = "slo"
    STACK = "stack"


def scenario_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema()
    return {"$schema": _DRAFT, **schema, "title": "ichaos scenario"}


def slo_schema() -> dict[str, Any]:
    native = SLODocument.model_json_schema()
    defs = native.pop("$defs", {})
    openslo = {
        "type": "object",
        "description": "An OpenSLO v1 SLO document (docs/slos.md lists the fields ichaos reads)",
        "properties": {
            "apiVersion": {"const": "openslo/v1"},
            "kind": {"const": "SLO"},
            "metadata": {"type": "object"},
            "spec": {"type": "object"},
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
    }
    return {
        "$schema": _DRAFT,
        "title": "ichaos SLO document",
        "$defs": defs,
        "anyOf": [native, openslo],
    }


def stack_schema() -> dict[str, Any]:
    schema = StackFile.model_json_schema(by_alias=True)
    return {"$schema": _DRAFT, **schema, "title": "ichaos services stack file"}


def schema(kind: SchemaKind) -> dict[str, Any]:
    if kind is SchemaKind.STACK:
        return stack_schema()
    return scenario_schema() if kind is SchemaKind.SCENARIO else slo_schema()
