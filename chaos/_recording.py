"""What a run leaves on disk, as observers of its events: ``verdict.json`` and the HTML report
(the journal is :class:`~chaos._journal.Journal`). The run loop imports none of them: whoever
runs a scenario plugs them in, all three at once with :func:`recorders`.

Each learns the run's directory from the ``run_started`` event. Order matters and
:func:`recorders` keeps it: the journal first, so that when the report is made from it, at the
verdict, the verdict is already on disk.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ._errors import ReportError
from ._events import EventType, Observer, RunEvent
from ._journal import Journal, write_verdict
from ._report import render_index, render_run
from ._verdict import Verdict


def run_dir_of(event: RunEvent) -> Path | None:
    """The run directory a ``run_started`` event names (None for any other event)."""
    if event.type is not EventType.RUN_STARTED:
        return None
    return Path(str(event.data["run_dir"]))


class VerdictFile:
    """Writes ``verdict.json`` (atomically) when the verdict is given."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None

    def __call__(self, event: RunEvent) -> None:
        self.run_dir = run_dir_of(event) or self.run_dir
        if event.type is EventType.VERDICT and self.run_dir is not None:
            verdict = event.data["verdict"]
            assert isinstance(verdict, Verdict)
            write_verdict(self.run_dir, verdict)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


class HtmlReport:
    """Renders the run's page from its journal when the verdict is given, and the index of
    every run beside it. A page that cannot be written is said (``say``), never a crash: the
    verdict stands without it."""

    def __init__(self, say: Callable[[str], None] = _stderr) -> None:
        self.say = say
        self.run_dir: Path | None = None
        self.path: Path | None = None

    def __call__(self, event: RunEvent) -> None:
        self.run_dir = run_dir_of(event) or self.run_dir
        if event.type is not EventType.VERDICT or self.run_dir is None:
            return
        try:
            self.path = render_run(self.run_dir)
            render_index(self.run_dir.parent)
        except (ReportError, OSError) as exc:
            self.say(f"! the HTML report of {self.run_dir} could not be written: {exc}")


def recorders() -> list[Observer]:
    """The journal, ``verdict.json`` and the HTML report, in the order they must run."""
    return [Journal(), VerdictFile(), HtmlReport()]
