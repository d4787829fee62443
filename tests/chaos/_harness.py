"""``ichaos run`` as a child process of a test, for the tests that signal or kill it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import ProcessExited


@contextlib.contextmanager
def harness(
    scenario: Path, reports: Path, log_path: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m chaos run SCENARIO --report-dir REPORTS --quiet`` with its output in
    ``log_path``. A wait on it that ends because it exited fails the test with what it said;
    whatever happens, it does not outlive the block."""
    with log_path.open("w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "chaos", "run", str(scenario), "--report-dir", str(reports),
             "--quiet", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )  # fmt: skip
    try:
        yield child
    except ProcessExited as exc:
        pytest.fail(f"{exc}; it said:\n{log_path.read_text()[-3000:]}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
