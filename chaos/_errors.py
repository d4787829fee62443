"""Exceptions raised by the harness.

HarnessError
└── WaitTimeout          a condition awaited with ``wait_until`` did not hold in time
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class WaitTimeout(HarnessError, TimeoutError):
    """A condition did not become true before its deadline."""
