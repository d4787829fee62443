"""Faults on containers: signals to the service process inside them, pauses, stops and
restarts by the engine, and disconnects from the run's network."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from chaos._errors import (
    ApplyError,
    RevertError,
    WaitTimeout,
)
from chaos._wait import wait_until

from ._base import Injector
from .process import SignalKind

_SIGNAL_SETTLE_S = 10.0  # how long a signalled service process may take to end


class ContainerInjector(Injector):
    """SIGKILL or SIGTERM to the service process in containers, or a pause of them.

    A signal goes to the process under the container's init, not to the container through the
    API: an engine may count an API kill as stopped by the user and not restart it (podman
    does), whereas a process that dies, as under the OOM killer, ends its container with 137 and
    the restart policy brings it back. A pause is the engine's (a SIGSTOP would stop only the
    init); reverting unpauses.
    """

    def __init__(self, containers: list[Any], kind: SignalKind, label: str) -> None:
        super().__init__()
        self.containers, self.kind, self.label = containers, kind, label

    @property
    def description(self) -> str:
        return f"{self.kind.value} of {self.label} (container)"

    def _apply(self) -> None:
        done: list[Any] = []
        try:
            for container in self.containers:
                if self.kind is SignalKind.PAUSE:
                    container.pause()
                    done.append(container)
                    if _state(container).get("Status") != "paused":
                        raise ApplyError(f"{container.name}: read back, it is not paused")
                else:
                    began = _state(container).get("StartedAt")
                    said = self._signal(
                        container, "KILL" if self.kind is SignalKind.KILL else "TERM"
                    )
                    done.append(container)
                    self._ended(container, began, said)
        except Exception as exc:
            if self.kind is SignalKind.PAUSE:  # leave nothing half-applied
                for container in done:
                    with contextlib.suppress(Exception):
                        container.unpause()
            raise ApplyError(f"{self.description}: {exc}") from exc

    def _ended(self, container: Any, began: object, said: str | None) -> None:
        """The service process ended: its container stopped, or was started again since.
        ``said``: what the engine answered about the signal's exec, if it failed."""

        def ended() -> bool:
            state = _state(container)
            return state.get("Status") != "running" or state.get("StartedAt") != began

        try:
            wait_until(ended, timeout=_SIGNAL_SETTLE_S, interval=0.1)
        except WaitTimeout as exc:
            why = f" (the engine said: {said})" if said else ""
            raise ApplyError(f"{container.name}: signalled, but its service process was still "
                             f"running {_SIGNAL_SETTLE_S:g}s later{why}") from exc  # fmt: skip

    @staticmethod
    def _signal(container: Any, name: str) -> str | None:
        """The signal sent from inside the container; what the engine said when it could not
        report on the exec (None: it ran and exited 0). The container may end with the process
        it signals, and an engine may then lose the exec session before it is read (podman
        does): whether the signal worked is the container's state to say, not the exec's."""
        import docker

        script = f"kill -{name} $(cat /proc/1/task/1/children)"
        try:
            code, output = container.exec_run(["sh", "-c", script])
        except docker.errors.APIError as exc:
            return str(exc)
        if code != 0:
            text = output.decode(errors="replace").strip()
            raise ApplyError(f"{container.name}: kill -{name} exited {code}: {text}")
        return None

    def _revert(self) -> None:
        if self.kind is not SignalKind.PAUSE:
            return

        def unpause(container: Any) -> None:
            if _state(container).get("Status") == "paused":
                container.unpause()
            if _state(container).get("Status") == "paused":
                raise RevertError(f"{container.name}: read back, still paused")

        _each(self.containers, unpause, self.description)


class ContainerStopInjector(Injector):
    """Containers stopped by the engine (SIGTERM, SIGKILL after ``timeout``); revert starts
    them again. A container the engine was asked to stop stays down whatever its restart
    policy, so the stop lasts exactly the fault's duration."""

    def __init__(self, containers: list[Any], label: str, timeout: int = 10) -> None:
        super().__init__()
        self.containers, self.label, self.timeout = containers, label, timeout

    @property
    def description(self) -> str:
        return f"stop of {self.label} (container)"

    def _apply(self) -> None:
        def stop(container: Any) -> None:
            container.stop(timeout=self.timeout)
            if _state(container).get("Status") == "running":
                raise ApplyError(f"{container.name}: read back, still running")

        try:
            for container in self.containers:
                stop(container)
        except Exception as exc:
            raise ApplyError(f"{self.description}: {exc}") from exc

    def _revert(self) -> None:
        def start(container: Any) -> None:
            if _state(container).get("Status") != "running":
                container.start()
            if _state(container).get("Status") != "running":
                raise RevertError(f"{container.name}: read back, not running")

        _each(self.containers, start, self.description)


class ContainerRestartInjector(Injector):
    """Containers restarted by the engine; over once each runs again (nothing to revert)."""

    def __init__(self, containers: list[Any], label: str, timeout: int = 10) -> None:
        super().__init__()
        self.containers, self.label, self.timeout = containers, label, timeout

    @property
    def description(self) -> str:
        return f"restart of {self.label} (container)"

    def _apply(self) -> None:
        try:
            for container in self.containers:
                began = _state(container).get("StartedAt")
                container.restart(timeout=self.timeout)
                state = _state(container)
                if state.get("Status") != "running" or state.get("StartedAt") == began:
                    raise ApplyError(f"{container.name}: read back, not started again")
        except ApplyError:
            raise
        except Exception as exc:
            raise ApplyError(f"{self.description}: {exc}") from exc

    def _revert(self) -> None:
        pass  # a restart is over when it is done


class DisconnectInjector(Injector):
    """Containers disconnected from the run's network; revert connects them again, under the
    names (``aliases``) the others reach them by."""

    def __init__(
        self, network: Any, containers: list[Any], label: str, aliases: list[str] | None = None
    ) -> None:
        super().__init__()
        self.network, self.containers, self.label = network, containers, label
        self.aliases = aliases

    @property
    def description(self) -> str:
        return f"network partition of {self.label}"

    def _apply(self) -> None:
        done: list[Any] = []
        try:
            for container in self.containers:
                self.network.disconnect(container)
                done.append(container)
                if self._attached(container):
                    raise ApplyError(f"{container.name}: read back, still on {self.network.name}")
        except Exception:
            for container in done:
                with contextlib.suppress(Exception):
                    self.network.connect(container, aliases=self.aliases)
            raise

    def _attached(self, container: Any) -> bool:
        container.reload()
        return self.network.name in (container.attrs["NetworkSettings"].get("Networks") or {})

    def _revert(self) -> None:
        def connect(container: Any) -> None:
            if not self._attached(container):
                self.network.connect(container, aliases=self.aliases)
            if not self._attached(container):
                raise RevertError(f"{container.name}: read back, not on {self.network.name}")

        _each(self.containers, connect, self.description)


def _state(container: Any) -> dict[str, Any]:
    """The container's state as the engine has it now."""
    container.reload()
    state: dict[str, Any] = container.attrs.get("State") or {}
    return state


def _each(containers: list[Any], action: Callable[[Any], object], what: str) -> None:
    """``action`` on every container, even after one fails; then one error naming the failures."""
    failures = []
    for container in containers:
        try:
            action(container)
        except Exception as exc:
            failures.append(f"{container.name}: {exc}")
    if failures:
        raise RevertError(f"{what}: revert failed for {'; '.join(failures)}")
