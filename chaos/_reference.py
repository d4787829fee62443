"""The scenario file reference and the services stack file reference in Markdown, generated
from their JSON Schemas (which are generated from the models that validate the files), so
docs/reference.md and docs/own-stack.md cannot drift: a test compares them."""

from __future__ import annotations

import json
from typing import Any

from ._schema import scenario_schema, stack_schema

START, END = "<!-- scenario-reference:start -->", "<!-- scenario-reference:end -->"
STACK_START, STACK_END = "<!-- stack-reference:start -->", "<!-- stack-reference:end -->"


def _type(node: dict[str, Any]) -> str:
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            parts = [_type(n) for n in node[key] if n.get("type") != "null"]
            return " or ".join(dict.fromkeys(parts))
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object":
        extra = node.get("additionalProperties")
        return f"map of {_type(extra)}" if isinstance(extra, dict) else "mapping"
    if kind == "string" and "examples" in node:
        return "text, e.g. " + ", ".join(f"`{e}`" for e in node["examples"][:3])
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind if k != "null")
    return str(kind or "any")


def _default(node: dict[str, Any], required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in node:
        return ""
    value = node["default"]
    if value in (None, [], {}):
        return ""
    if isinstance(value, int | float) and "500ms" in json.dumps(node):  # a duration field
        return f"`{value:g}s`"
    if isinstance(value, list) and all(isinstance(v, dict) and "status_class" in v for v in value):
        return ", ".join(f"`{_status(v)}`" for v in value)  # status patterns, as files write them
    return f"`{json.dumps(value)}`"


def _status(pattern: dict[str, Any]) -> str:
    if pattern.get("status_class") is not None:
        return f"{pattern['status_class']}xx"
    return "error" if pattern.get("code") is None else str(pattern["code"])


def _table(name: str, model: dict[str, Any]) -> list[str]:
    lines = [f"## {name}", ""]
    if model.get("description"):
        lines += [" ".join(str(model["description"]).split()), ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    required = set(model.get("required", []))
    for field, node in model.get("properties", {}).items():
        meaning = " ".join(str(node.get("description", "")).split())
        lines.append(
            f"| `{field}` | {_type(node)} | {_default(node, field in required)} | {meaning} |"
        )
    return [*lines, ""]


def scenario_reference() -> str:
    return _reference("Scenario", scenario_schema())


def stack_reference() -> str:
    return _reference("StackFile", stack_schema())


def _reference(root: str, schema: dict[str, Any]) -> str:
    defs: dict[str, Any] = schema.get("$defs", {})
    lines = _table(root, schema)
    for name in sorted(defs):
        model = defs[name]
        if model.get("type") == "object" and "properties" in model:
            lines += _table(name, model)
        elif "enum" in model:
            values = ", ".join(f"`{v}`" for v in model["enum"])
            lines += [f"## {name}", "", f"One of {values}.", ""]
    return "\n".join(lines).rstrip() + "\n"
