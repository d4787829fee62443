"""Exceptions raised by the SLO library.

SLOError
├── SLOFileError       an SLO document cannot be read or is invalid (file, line, field)
└── EvaluationError    arguments that cannot be evaluated (start after end, a window of zero, ...)

An SLO that is breached is a result (see ``Evaluation``), never an exception. Internal, never
raised out of the package: ``DocumentInvalid`` carries a converter's issues to the parser, which
reports them as an ``SLOFileError``.
"""

from __future__ import annotations

from dataclasses import dataclass


class SLOError(Exception):
    """Base of every error the SLO library raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an SLO document.

    ``line`` is 1-based and ``None`` when the problem has no place in the file (it cannot be
    read, say). ``field`` is a dotted path such as ``sli.threshold`` or
    ``spec.objectives[0].op``; empty when the problem is the document as a whole.
    """

    file: str
    line: int | None
    field: str
    message: str

    def describe(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class SLOFileError(SLOError):
    """An SLO document could not be read or failed validation.

    Carries every problem found; ``file``, ``line`` and ``field`` are those of the first one.
    """

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        if not problems:
            raise ValueError("SLOFileError needs at least one problem")
        self.problems = tuple(problems)
        first = self.problems[0]
        self.file = first.file
        self.line = first.line
        self.field = first.field
        super().__init__("\n".join(p.describe() for p in self.problems))


class EvaluationError(SLOError, ValueError):
    """The arguments of an evaluation make no sense (a window of zero, start after end, ...)."""
