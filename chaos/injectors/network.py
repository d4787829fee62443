"""Faults on a hop: a Toxiproxy toxic, or the proxy disabled (a partition); both read back
from the server after they are set and after they are removed."""

from __future__ import annotations

import contextlib

from chaos._errors import (
    ApplyError,
    RevertError,
)
from chaos._toxiproxy import (
    Toxic,
    ToxiproxyClient,
    ToxiproxyError,
)

from ._base import Acted, Injector


class ToxicInjector(Injector):
    """A Toxiproxy toxic (latency, bandwidth, timeout, reset_peer, ...) on one proxy."""

    def __init__(self, client: ToxiproxyClient, proxy: str, toxic: Toxic) -> None:
        super().__init__()
        self.client, self.proxy, self.toxic = client, proxy, toxic
        self._acted: Acted | None = None

    @property
    def acted(self) -> Acted | None:
        """The stream toxics count the answers they saw and the ones they acted on; read from
        the server just before the toxic is removed."""
        return self._acted

    @property
    def description(self) -> str:
        return f"{self.toxic.type.value} toxic {self.toxic.name!r} on proxy {self.proxy!r}"

    def _apply(self) -> None:
        self.client.add_toxic(self.proxy, self.toxic)
        # Read back from the server, not from its answer to the add: what is in place now.
        found = [t for t in self.client.toxics(self.proxy) if t.name == self.toxic.name]
        problem = _toxic_differs(self.toxic, found[0]) if found else "it is not on the proxy"
        if problem:
            with contextlib.suppress(ToxiproxyError):
                self.client.remove_toxic(self.proxy, self.toxic.name)
            raise ApplyError(f"{self.description}: read back from Toxiproxy, {problem}")

    def _revert(self) -> None:
        with contextlib.suppress(ToxiproxyError):  # the counts are evidence, not the revert
            for toxic in self.client.toxics(self.proxy):
                if toxic.name == self.toxic.name:
                    self._acted = _counts(toxic)
        try:
            self.client.remove_toxic(self.proxy, self.toxic.name)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone is reverted
                raise
        if any(t.name == self.toxic.name for t in self.client.toxics(self.proxy)):
            raise RevertError(f"{self.description}: still on the proxy after its removal")


def _counts(toxic: Toxic) -> Acted | None:
    seen, affected = toxic.attributes.get("seen"), toxic.attributes.get("affected")
    if isinstance(seen, int) and isinstance(affected, int):
        return Acted(seen, affected)
    return None


def _toxic_differs(wanted: Toxic, found: Toxic) -> str | None:
    """What of ``wanted`` the server does not hold (None: all of it). The server adds every
    attribute it knows with its default, so only the ones asked for are compared."""
    if found.type is not wanted.type or found.stream is not wanted.stream:
        return f"it is a {found.stream.value} {found.type.value} toxic"
    if abs(found.toxicity - wanted.toxicity) > 1e-9:
        return f"its toxicity is {found.toxicity:g}, not {wanted.toxicity:g}"
    wrong = {k: found.attributes.get(k) for k, v in wanted.attributes.items()
             if found.attributes.get(k) != v}  # fmt: skip
    return f"its attributes are {wrong}, not {wanted.attributes}" if wrong else None


class PartitionInjector(Injector):
    """A proxy disabled: every connection through it is refused until revert."""

    def __init__(self, client: ToxiproxyClient, proxy: str) -> None:
        super().__init__()
        self.client, self.proxy = client, proxy

    @property
    def description(self) -> str:
        return f"partition of proxy {self.proxy!r}"

    def _apply(self) -> None:
        self.client.update_proxy(self.proxy, enabled=False)
        if self.client.proxy(self.proxy).enabled:
            raise ApplyError(f"{self.description}: read back, the proxy is still enabled")

    def _revert(self) -> None:
        self.client.update_proxy(self.proxy, enabled=True)
        if not self.client.proxy(self.proxy).enabled:
            raise RevertError(f"{self.description}: read back, the proxy is still disabled")
