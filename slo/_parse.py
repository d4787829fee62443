"""Reading SLO files: YAML → validated ``SLO`` models, with errors that name the file, the
line and the field.

The YAML is composed into a node tree first, so a path from a validation error can be
walked back to the line it came from. A file holds one or more documents (``---``), each an
ichaos SLO or an OpenSLO v1 ``kind: SLO``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ._errors import Problem, SLOFileError
from ._issues import DocumentInvalid, Issue, Loc, issues_from
from ._issues import field_path as _field
from ._models import SLO
from ._native import NativeDocument
from ._openslo import OpenSLODocument, header_issues
from ._reading import compose_documents, read_document_text


def load_slos(path: str | os.PathLike[str]) -> list[SLO]:
    """Every SLO in a YAML file. Raises ``SLOFileError`` listing every problem found."""
    source = os.fspath(path)
    return parse_slos(read_document_text(source), source=source)


def load_slo(path: str | os.PathLike[str]) -> SLO:
    """The one SLO in a YAML file (more than one is an error)."""
    return _only(load_slos(path), os.fspath(path))


def parse_slo(text: str, *, source: str = "<string>") -> SLO:
    """The one SLO in YAML ``text``; ``source`` names it in errors."""
    return _only(parse_slos(text, source=source), source)


def parse_slos(text: str, *, source: str = "<string>") -> list[SLO]:
    """Every SLO in YAML ``text``; ``source`` names it in errors."""
    documents = compose_documents(text, source)
    if not documents:
        raise SLOFileError([Problem(source, None, "", "no SLO document in the file")])
    slos: list[SLO] = []
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for node, data in documents:
        duplicates = _duplicate_keys(source, node)
        if duplicates:
            problems.extend(duplicates)
            continue
        try:
            slo = _document(data)
        except DocumentInvalid as exc:
            problems.extend(_located(source, node, exc.issues))
            continue
        name_at = ("name",) if _child(node, "name") is not None else ("metadata", "name")
        line, field = _locate(node, name_at)
        if slo.name in first:
            message = f"an SLO named {slo.name!r} is already defined at line {first[slo.name]}"
            problems.append(Problem(source, line, field, message))
        first.setdefault(slo.name, line)
        slos.append(slo)
    if problems:
        raise SLOFileError(problems)
    return slos


M = TypeVar("M", bound=BaseModel)


Check = Callable[[M], Sequence[Issue]]
"""Further checks of a validated document; their issues are reported at their lines too."""


def load_yaml_document(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    check: Check[M] | None = None,
) -> M:
    """One YAML document from a file, validated into ``model``: the same errors as SLO files
    (file, line and field for every problem; duplicate keys refused), read within the limits
    of :mod:`slo._reading`. Other ichaos files — stack files, scenarios — are read with it."""
    source = os.fspath(path)
    return parse_yaml_document(
        read_document_text(source), model, source=source, context=context, check=check
    )


def parse_yaml_document(
    text: str,
    model: type[M],
    *,
    source: str = "<string>",
    context: dict[str, Any] | None = None,
    check: Check[M] | None = None,
) -> M:
    """Like :func:`load_yaml_document`, from text; an empty document validates as ``{}``.
    ``context`` reaches the model's validators; ``{"file": True}`` is always in it."""
    documents = compose_documents(text, source)
    if len(documents) > 1:
        raise SLOFileError([Problem(source, None, "", "expected one YAML document, found several")])
    node, data = documents[0] if documents else (None, None)
    if node is not None and (duplicates := _duplicate_keys(source, node)):
        raise SLOFileError(duplicates)
    try:
        document = model.model_validate(data or {}, context={**(context or {}), "file": True})
    except ValidationError as exc:
        raise SLOFileError(_placed(source, node, issues_from(exc))) from exc
    issues = list(check(document)) if check is not None else []
    if issues:
        raise SLOFileError(_placed(source, node, issues))
    return document


def _placed(source: str, node: yaml.Node | None, issues: list[Issue]) -> list[Problem]:
    if node is None:
        return [Problem(source, None, _field(i.loc), i.message) for i in issues]
    return sorted(_located(source, node, issues), key=lambda p: p.line or 0)


def _only(slos: list[SLO], source: str) -> SLO:
    if len(slos) != 1:
        message = f"expected one SLO document, found {len(slos)}: use load_slos for several"
        raise SLOFileError([Problem(source, None, "", message)])
    return slos[0]


def _document(data: Any) -> SLO:
    if not isinstance(data, dict):
        raise DocumentInvalid([Issue((), "an SLO document must be a mapping of fields")])
    api_version = data.get("apiVersion")
    is_openslo = isinstance(api_version, str) and api_version.lower().startswith("openslo")
    schema: type[NativeDocument | OpenSLODocument] = (
        OpenSLODocument if is_openslo else NativeDocument
    )
    if is_openslo:
        # Another version or kind has another shape: say so rather than list its fields.
        wrong = header_issues(api_version, data.get("kind"))
        if wrong:
            raise DocumentInvalid(wrong)
    try:
        document = schema.model_validate(data, context={"file": True})
    except ValidationError as exc:
        raise DocumentInvalid(issues_from(exc)) from exc
    return document.to_slo()


def _duplicate_keys(
    source: str, node: yaml.Node, parts: tuple[str | int, ...] = ()
) -> list[Problem]:
    """PyYAML keeps the last of two equal keys without a word; a second ``target:`` is
    almost always a mistake, so it is an error here."""
    found: list[Problem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            if name in seen:
                line = key.start_mark.line + 1
                found.append(Problem(source, line, _field([*parts, name]), "duplicate key"))
            seen.add(name)
            found.extend(_duplicate_keys(source, value, (*parts, name)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.extend(_duplicate_keys(source, item, (*parts, index)))
    return found


def _located(source: str, root: yaml.Node, issues: list[Issue]) -> list[Problem]:
    problems = []
    for issue in issues:
        line, field = _locate(root, issue.loc)
        problems.append(Problem(source, line, field, issue.message))
    return problems


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, str]:
    """The line of the deepest node ``loc`` reaches, and ``loc`` as a dotted field path.

    Parts that match nothing in the document are discriminated-union tags that pydantic adds
    (``sli.latency.threshold``) and are dropped, except a last one under a mapping: a missing
    field. A tag that is also a key (``toxic`` in ``{kind: toxic, toxic: latency}``) is told
    apart by :func:`_is_tag`; a tag that ends the path is a member's own validator speaking of
    the entry as a whole (``abort[0]``).
    """
    node: yaml.Node | None = root
    line = root.start_mark.line + 1
    parts: list[str | int] = []
    tagged = False  # a tag of the current node was dropped already
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        child = _child(node, part)
        if not last and _is_tag(node, part, child, loc[index + 1]):
            tagged = True
            continue
        if last and not tagged and child is None and _is_tag(node, part, None, ""):
            break  # the member's own validator: the problem is the entry as a whole
        if child is not None:
            key_line, node = child
            line = key_line
            parts.append(part)
            tagged = False
        elif isinstance(part, int) or node is None or (last and isinstance(node, yaml.MappingNode)):
            parts.append(part)
            node = None
    return line, _field(parts)


def _is_tag(
    node: yaml.Node | None,
    part: str | int,
    child: tuple[int, yaml.Node] | None,
    following: str | int,
) -> bool:
    """Whether ``part`` is the tag pydantic puts in the path of a discriminated union member
    (``faults[0].toxic.hop`` for ``{kind: toxic, toxic: latency, hop: …}``) rather than a key:
    the mapping holds it as a value (``kind: toxic``), and what follows is found beside it,
    not under it."""
    if not isinstance(node, yaml.MappingNode) or not isinstance(part, str):
        return False
    if not any(isinstance(v, yaml.ScalarNode) and v.value == part for _, v in node.value):
        return False
    if child is None:
        return True
    if _child(child[1], following) is not None:
        return False
    scalar = not isinstance(child[1], yaml.MappingNode | yaml.SequenceNode)
    return scalar or _child(node, following) is not None


def _child(node: yaml.Node | None, part: str | int) -> tuple[int, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return key.start_mark.line + 1, value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        item = node.value[part]
        return item.start_mark.line + 1, item
    return None
