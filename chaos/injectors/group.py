"""Several injectors as one fault."""

from __future__ import annotations

from collections.abc import Sequence

from chaos._errors import (
    RevertError,
)

from ._base import Acted, Injector


class InjectorGroup(Injector):
    """Several injectors as one fault: all applied or none (what applied is undone)."""

    def __init__(self, name: str, parts: Sequence[Injector]) -> None:
        super().__init__()
        self.name, self.parts = name, list(parts)

    @property
    def description(self) -> str:
        return self.name if len(self.parts) != 1 else self.parts[0].description

    @property
    def provokes(self) -> frozenset[str]:
        return frozenset().union(*(part.provokes for part in self.parts))

    @property
    def acted(self) -> Acted | None:
        counts = [part.acted for part in self.parts if part.acted is not None]
        return sum(counts[1:], counts[0]) if counts else None

    def _apply(self) -> None:
        done: list[Injector] = []
        try:
            for part in self.parts:
                part.apply()
                done.append(part)
        except BaseException as exc:
            stuck = []
            for part in reversed(done):
                try:
                    part.revert()
                except RevertError as undo:
                    stuck.append(str(undo))
            if stuck:
                # Not "nothing left applied": the parts that would not undo are still in
                # place; the group stays applied and its revert tries them again.
                raise RevertError(
                    f"{self.name}: {exc}; undoing the parts already applied failed: "
                    + "; ".join(stuck)
                ) from exc
            raise

    def _revert(self) -> None:
        failures = []
        for part in reversed(self.parts):
            try:
                part.revert()
            except RevertError as exc:
                failures.append(str(exc))
        if failures:
            raise RevertError("; ".join(failures))
