"""Waiting for conditions instead of sleeping for them."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ._errors import ProcessExited, WaitTimeout

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str = "condition",
    stop: threading.Event | None = None,
    process: subprocess.Popen[Any] | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises :class:`WaitTimeout` after ``timeout`` seconds. Exceptions from the predicate
    propagate. A set ``stop`` event ends the wait at once (an abort must not wait out a poll).
    ``process`` is one the condition depends on: once it has exited the condition is checked
    one last time, then :class:`ProcessExited` ends the wait instead of the full timeout.
    """
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")
    pause = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        # Read before the predicate: a process that exits after its last piece of work still
        # gets that work checked once.
        exited = process is not None and process.poll() is not None
        value = predicate()
        if value:
            return value
        if exited:
            assert process is not None
            raise ProcessExited(
                f"{message}: process {process.pid} exited with code {process.returncode} "
                "before it held"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"{message} did not hold within {timeout:g}s")
        if pause.wait(min(interval, remaining)) and stop is not None:
            raise WaitTimeout(f"{message}: wait stopped before it held")
