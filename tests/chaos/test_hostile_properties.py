"""Property: whatever a scenario or SLO file holds, loading it ends in bounded time and memory
with either a loaded scenario or an error naming the file (and a line, where one applies),
never another exception.

Documents are generated from the shipped scenarios and SLO files by mutations the JSON Schema
guides (values of every JSON type at any place, the schema's own field names where they do not
belong, deletions), and from their text (cut short, bytes inserted, alias bombs, deep nesting).
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos import ScenarioError, load_scenario
from chaos._schema import scenario_schema, slo_schema
from slo import SLOFileError, load_slos

ROOT = Path(__file__).resolve().parents[2]
MAX_SECONDS = 10.0
MAX_BYTES = 64 << 20


def _absolute(document: dict[str, Any], base: Path) -> dict[str, Any]:
    """References made absolute, so a copy written elsewhere still names the real files."""
    for entry in document.get("slos", []):
        if isinstance(entry, dict) and set(entry) == {"file"}:
            entry["file"] = str((base / entry["file"]).resolve())
    if "stack" in document:
        document["stack"] = str((base / document["stack"]).resolve())
    return document


SCENARIOS = [
    _absolute(yaml.safe_load(p.read_text()), p.parent)
    for p in sorted((ROOT / "scenarios").glob("*.yaml"))
]
SLO_DOCUMENTS = [
    d for p in sorted((ROOT / "slo" / "examples").glob("*.yaml"))
    for d in yaml.safe_load_all(p.read_text())
]  # fmt: skip


def _field_names(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        found.update(schema.get("properties", {}))
        for value in schema.values():
            found |= _field_names(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= _field_names(value)
    return found


FIELDS = sorted(_field_names(scenario_schema()) | _field_names(slo_schema()))
TRICKY = [
    "", " ", "..", "/etc/passwd", "../../x", "primary[99]", "primary[\uff10]", "1000d", "-1s",
    "Run", "10^21", "file:///etc/passwd", "20/s", "5xx", "true", "null", "*", "&",
]  # fmt: skip

leaves = (
    st.none() | st.booleans() | st.integers(-(10**22), 10**22)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
    | st.sampled_from(TRICKY) | st.sampled_from(FIELDS)
)  # fmt: skip
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _places(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) of a document: where a mutation can happen."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _places(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _places(value)


@st.composite
def mutated(draw: st.DrawFn, bases: list[Any]) -> str:
    document = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(_places(document))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(values)
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(st.sampled_from(FIELDS))] = draw(values)
        else:
            container.append(draw(values))
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    return draw(_text_mutation(text))


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    kind = draw(st.sampled_from(["none", "none", "cut", "insert", "bomb", "deep"]))
    if kind == "cut":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "insert":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.text(max_size=10)) + text[at:]
    if kind == "bomb":
        levels = draw(st.integers(2, 12))
        width = draw(st.integers(2, 12))
        lines = [f"x0: &x0 [{', '.join(['lol'] * width)}]"]
        lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * width)}]" for i in range(1, levels)]
        return text + "\n".join(lines) + f"\ndescription: *x{levels - 1}\n"
    if kind == "deep":
        depth = draw(st.integers(10, 3000))
        return text + "description: " + "[" * depth + "]" * depth + "\n"
    return text


def _bounded(load: Any, text: str, errors: tuple[type[Exception], ...]) -> str | None:
    """Load ``text`` from a file; the error message (None when it loaded), checked to be
    bounded in time and memory."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "generated.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        tracemalloc.start()
        started = time.monotonic()
        try:
            load(path)
            message = None
        except errors as exc:
            message = str(exc)
        finally:
            elapsed = time.monotonic() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert elapsed < MAX_SECONDS, f"took {elapsed:.1f}s"
        assert peak < MAX_BYTES, f"peak {peak >> 20} MiB"
        if message is not None:
            # Every problem names the file, with a line where one applies, and a reason.
            located = re.compile(rf"^\s*{re.escape(str(path))}(:\d+)?: \S")
            assert any(located.match(line) for line in message.splitlines()), message
            assert "Traceback" not in message
        return message


PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(mutated(SCENARIOS))
def test_any_scenario_file_loads_or_is_refused_with_its_file_and_line(text: str) -> None:
    message = _bounded(load_scenario, text, (ScenarioError,))
    if message is not None:
        assert message.startswith("invalid scenario:\n")


@PROPERTY
@given(mutated(SLO_DOCUMENTS))
def test_any_slo_file_loads_or_is_refused_with_its_file_and_line(text: str) -> None:
    _bounded(load_slos, text, (SLOFileError,))
