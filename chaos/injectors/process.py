"""Signals to processes by pid (kill, terminate, pause), refused for a pid that is no longer
the target, and their effect read back from ``/proc``."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from chaos._errors import (
    ApplyError,
    RevertError,
    WaitTimeout,
)
from chaos._wait import wait_until

from ._base import Injector


class SignalKind(StrEnum):
    KILL = "kill"  # SIGKILL; reverting is the supervisor's restart, not ours
    TERMINATE = "terminate"  # SIGTERM; likewise
    PAUSE = "pause"  # SIGSTOP, reverted with SIGCONT


_SIGNALS = {SignalKind.KILL: signal.SIGKILL, SignalKind.TERMINATE: signal.SIGTERM,
            SignalKind.PAUSE: signal.SIGSTOP}  # fmt: skip


class SignalInjector(Injector):
    """A signal to one or more processes (workers or the gateway), by pid.

    ``marker`` is what each process's command line must contain: a pid read from a state
    file may since belong to another process (the worker restarted, the pid was reused), and
    a signal to that one is refused, not sent. After the signal, the effect is read back from
    ``/proc``: a kill or terminate must end the process (a zombie counts), a pause must stop it.
    """

    def __init__(
        self, pids: list[int], kind: SignalKind, label: str = "", *, marker: str = "",
        settle: float = 10.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if not pids:
            raise ValueError("SignalInjector needs at least one pid")
        self.pids, self.kind, self.label = pids, kind, label or f"pids {pids}"
        self.marker, self.settle = marker, settle

    @property
    def description(self) -> str:
        return f"{self.kind.value} of {self.label}"

    def _apply(self) -> None:
        for pid in self.pids:
            line = settled_cmdline(pid)
            if not line or self.marker not in line:
                seen = f"its command line is {line[:120]!r}" if line else "it is gone"
                raise ApplyError(f"{self.description}: pid {pid} is no longer the target: {seen}")
        sent: list[int] = []
        try:
            for pid in self.pids:
                os.kill(pid, _SIGNALS[self.kind])
                sent.append(pid)
            for pid in self.pids:
                self._took_effect(pid)
        except (ProcessLookupError, ApplyError) as exc:
            # Leave nothing half-applied: resume whatever this pause already stopped.
            if self.kind is SignalKind.PAUSE:
                for pid in sent:
                    _continue(pid)
            if isinstance(exc, ApplyError):
                raise
            raise ApplyError(
                f"{self.description}: no process {exc.filename or ''}".strip()
            ) from exc

    def _took_effect(self, pid: int) -> None:
        if self.kind is SignalKind.PAUSE:
            held, what = lambda: process_state(pid) in ("T", "t", "Z", ""), "stopped"
        else:
            held, what = lambda: process_state(pid) in ("Z", ""), "ended"
        try:
            wait_until(held, timeout=self.settle, interval=0.02, message=f"pid {pid} {what}")
        except WaitTimeout as exc:
            raise ApplyError(f"{self.description}: pid {pid} was signalled but not {what} "
                             f"within {self.settle:g}s") from exc  # fmt: skip

    def _revert(self) -> None:
        if self.kind is SignalKind.PAUSE:
            for pid in self.pids:
                _continue(pid)
            for pid in self.pids:
                try:
                    wait_until(_running(pid), timeout=self.settle, interval=0.02)
                except WaitTimeout as exc:
                    raise RevertError(f"{self.description}: pid {pid} still stopped") from exc


def settled_cmdline(pid: int) -> str:
    """The command line of a live process; a process caught between fork and exec has none
    for an instant, so an empty one of a live process is read again (briefly)."""
    with contextlib.suppress(WaitTimeout):
        wait_until(lambda: process_cmdline(pid) or process_state(pid) in ("", "Z"),
                   timeout=1.0, interval=0.01)  # fmt: skip
    return process_cmdline(pid)


def _running(pid: int) -> Callable[[], bool]:
    return lambda: process_state(pid) not in ("T", "t")


def process_cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ('' when it is gone or a zombie)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def process_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name, from the state letter on
    (empty when there is no process): ``[0]`` the state, ``[19]`` the start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat.rsplit(")", 1)[1].split()


def process_state(pid: int) -> str:
    """The state letter (R, S, T, Z, ...); '' when there is no process."""
    fields = process_stat(pid)
    return fields[0] if fields else ""


def _continue(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # died while paused: nothing to resume
        os.kill(pid, signal.SIGCONT)
