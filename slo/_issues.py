"""Problems found while validating a document, located by a path into it (``loc``).

The parser turns each into a ``Problem`` with a line number; nothing here knows about YAML.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Issue:
    loc: Loc
    message: str

    @property
    def field(self) -> str:
        """``loc`` as a dotted field path: ``faults[0].hop``."""
        return field_path(self.loc)


def field_path(parts: Loc | list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class DocumentInvalid(Exception):
    """Internal: carries issues from a converter to the parser, which reports them."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues)
        self.issues = issues


def _short(value: object, limit: int = 60) -> str:
    """A value as the message quotes it; a whole file read as one string is not repeated."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}…{text[-4:]}"


def issues_from(error: ValidationError, prefix: Loc = ()) -> list[Issue]:
    """Pydantic's errors as issues with messages written for the person editing the file."""
    issues = []
    for detail in error.errors(include_url=False):
        loc: Loc = prefix + tuple(detail["loc"])
        kind = detail["type"]
        context = detail.get("ctx") or {}
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "union_tag_not_found":
            tag = str(context.get("discriminator", "")).strip("'")
            loc, message = (*loc, tag), "required field is missing"
        elif kind == "union_tag_invalid":
            tag = str(context.get("discriminator", "")).strip("'")
            expected = ", ".join(re.findall(r"'([^']*)'", str(context.get("expected_tags", ""))))
            loc = (*loc, tag)
            message = f"unknown {tag} {context.get('tag')!r}; expected one of: {expected}"
        else:
            message = str(detail["msg"]).removeprefix("Value error, ")
            value = detail.get("input")
            if isinstance(value, str | int | float | bool) and repr(value) not in message:
                message = f"{message} (got {_short(value)})"
        issues.append(Issue(loc, message))
    return issues
