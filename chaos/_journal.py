"""The run directory's ``journal.jsonl``: every run event, one JSON object per line.

Written as the run goes and flushed at least once a second (and at once for anything but a
request), so a crashed run loses at most its last second and a report can still be made from it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

from ._events import EventType, RunEvent
from ._verdict import Verdict

JOURNAL = "journal.jsonl"
VERDICT = "verdict.json"
PAGE = "index.html"  # the run's HTML report, beside them


class Journal:
    """Every event of a run into ``journal.jsonl``: of ``run_dir``, or, without one, of the
    directory the ``run_started`` event names (opened then)."""

    def __init__(self, run_dir: Path | None = None, *, flush_every: float = 1.0) -> None:
        self.path: Path | None = None
        self._file: IO[str] | None = None
        if run_dir is not None:
            self._open(run_dir)
        self._flush_every = flush_every
        self._flushed = time.monotonic()

    def _open(self, run_dir: Path) -> None:
        self.path = run_dir / JOURNAL
        self._file = self.path.open("a", encoding="utf-8")

    def __call__(self, event: RunEvent) -> None:
        if self._file is None and event.type is EventType.RUN_STARTED and self.path is None:
            self._open(Path(str(event.data["run_dir"])))
        if self._file is None:
            return
        self._file.write(json.dumps(event.as_dict(), default=_jsonable) + "\n")
        now = time.monotonic()
        if event.type is not EventType.REQUEST or now - self._flushed >= self._flush_every:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._flushed = now
        if event.type is EventType.RUN_FINISHED:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _jsonable(value: object) -> object:
    """Models in event data (the verdict, probe results) are written as their JSON."""
    if isinstance(value, Verdict):
        return value.to_json()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)


def read_journal(run_dir: Path) -> Iterator[dict[str, Any]]:
    """The journal's events; a torn last line (a crash mid-write) is skipped."""
    with (run_dir / JOURNAL).open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def write_verdict(run_dir: Path, verdict: Verdict) -> Path:
    path = run_dir / VERDICT
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verdict.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
