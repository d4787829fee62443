"""Fault injectors: one interface, ``apply()`` and ``revert()``, both idempotent.

An injector either applies completely or raises :class:`ApplyError` with nothing left applied;
``revert()`` after a failed or absent ``apply()`` does nothing. Used as a context manager, the
revert runs in ``finally``. A revert that cannot be completed raises :class:`RevertError`: it is
loud by design, and the run that hits it fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from chaos._errors import (
    ApplyError,
    RevertError,
)


@dataclass(frozen=True)
class Acted:
    """What a fault that picks its victims did, as it counted them: ``seen`` candidates (answers
    that went through it) and ``affected`` (the ones it acted on)."""

    seen: int
    affected: int

    def __add__(self, other: Acted) -> Acted:
        return Acted(self.seen + other.seen, self.affected + other.affected)


class Injector(ABC):
    """Base of every fault: subclasses implement ``_apply`` and ``_revert``."""

    def __init__(self) -> None:
        self.applied = False

    @property
    def provokes(self) -> frozenset[str]:
        """Service event kinds this fault's own action causes, which are not the service
        detecting it (none by default)."""
        return frozenset()

    @property
    def acted(self) -> Acted | None:
        """What it did, counted by the fault itself, once reverted (None: it does not count)."""
        return None

    @property
    @abstractmethod
    def description(self) -> str: ...

    @abstractmethod
    def _apply(self) -> None: ...

    @abstractmethod
    def _revert(self) -> None: ...

    def apply(self) -> None:
        if self.applied:
            return
        try:
            self._apply()
        except ApplyError:
            raise
        except RevertError:
            # The apply failed and so did undoing what of it took: something of it is still
            # in place, so it counts as applied, and the next revert() tries again.
            self.applied = True
            raise
        except Exception as exc:
            raise ApplyError(f"{self.description}: {exc}") from exc
        self.applied = True

    def revert(self) -> None:
        if not self.applied:
            return
        try:
            self._revert()
        except RevertError:
            raise
        except Exception as exc:
            raise RevertError(f"{self.description}: revert failed: {exc}") from exc
        self.applied = False

    def __enter__(self) -> Injector:
        self.apply()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.revert()
