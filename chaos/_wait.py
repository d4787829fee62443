"""Waiting for conditions instead of sleeping for them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from ._errors import WaitTimeout

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    message: str = "condition",
    stop: threading.Event | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy and return that value.

    Raises :class:`WaitTimeout` after ``timeout`` seconds. Exceptions from the predicate
    propagate. A set ``stop`` event ends the wait at once (an abort must not wait out a poll).
    """
    if timeout < 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")
    pause = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"{message} did not hold within {timeout:g}s")
        if pause.wait(min(interval, remaining)) and stop is not None:
            raise WaitTimeout(f"{message}: wait stopped before it held")
