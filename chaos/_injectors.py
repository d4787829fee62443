"""Fault injectors: one interface, ``apply()`` and ``revert()``, both idempotent.

An injector either applies completely or raises :class:`ApplyError` with nothing left applied;
``revert()`` after a failed or absent ``apply()`` does nothing. Used as a context manager, the
revert runs in ``finally``. A revert that cannot be completed raises :class:`RevertError`: it is
loud by design, and the run that hits it fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from target_service import ADMIN_TOKEN_HEADER, WORKER_FAULTS_PATH

from ._errors import ApplyError, RevertError, WaitTimeout
from ._toxiproxy import Toxic, ToxiproxyClient, ToxiproxyError
from ._wait import wait_until


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


class ToxicInjector(Injector):
    """A Toxiproxy toxic (latency, bandwidth, timeout, reset_peer, ...) on one proxy."""

    def __init__(self, client: ToxiproxyClient, proxy: str, toxic: Toxic) -> None:
        super().__init__()
        self.client, self.proxy, self.toxic = client, proxy, toxic

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
        try:
            self.client.remove_toxic(self.proxy, self.toxic.name)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone is reverted
                raise
        if any(t.name == self.toxic.name for t in self.client.toxics(self.proxy)):
            raise RevertError(f"{self.description}: still on the proxy after its removal")


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
            line = _settled_cmdline(pid)
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


def _settled_cmdline(pid: int) -> str:
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


class GpuFault(StrEnum):
    GPU_ERROR = "gpu_error"
    HANG = "hang"
    SLOW = "slow"
    OOM = "oom"


class GpuFaultInjector(Injector):
    """A worker's fault hook (``/admin/faults/{kind}``), set and cleared over HTTP."""

    def __init__(
        self, worker_url: str, kind: GpuFault, token: str, params: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.url, self.kind, self.params = worker_url.rstrip("/"), kind, params or {}
        self.headers = {ADMIN_TOKEN_HEADER: token}

    @property
    def description(self) -> str:
        return f"{self.kind.value} fault hook on {self.url}"

    def _apply(self) -> None:
        response = httpx.post(
            f"{self.url}{WORKER_FAULTS_PATH}/{self.kind.value}", json=self.params,
            headers=self.headers, timeout=5,
        )  # fmt: skip
        if response.status_code != 200:
            raise ApplyError(f"{self.description}: HTTP {response.status_code}: {response.text}")
        # The worker answers with its hooks' state as it was right after the change: read back
        # there, since a gpu_error may end the worker before any later read.
        if not self._is_set(_hooks(response)):
            self._clear()
            raise ApplyError(f"{self.description}: the worker says it is not set: {response.text}")

    def _is_set(self, hooks: dict[str, Any]) -> bool:
        state = hooks.get(self.kind.value)
        if not isinstance(state, dict):
            return False
        if self.kind is GpuFault.GPU_ERROR:
            return bool(state.get("armed") or state.get("fired"))
        if self.kind is GpuFault.SLOW and "ms_per_token" in self.params:
            return (
                bool(state.get("active"))
                and state.get("ms_per_token") == self.params["ms_per_token"]
            )
        if self.kind is GpuFault.OOM:
            return bool(state.get("active") or state.get("remaining") == 0)
        return bool(state.get("active"))

    def _clear(self) -> httpx.Response | None:
        try:
            return httpx.delete(
                f"{self.url}{WORKER_FAULTS_PATH}/{self.kind.value}", headers=self.headers, timeout=5
            )
        except httpx.ConnectError:
            return None  # the worker is gone (gpu_error ends it): its fault state went with it

    def _revert(self) -> None:
        response = self._clear()
        if response is None:
            return
        if response.status_code != 200:
            raise RevertError(f"{self.description}: clear: HTTP {response.status_code}")
        state = _hooks(response).get(self.kind.value)
        still = isinstance(state, dict) and (state.get("active") or state.get("armed"))
        if not isinstance(state, dict) or still:
            raise RevertError(f"{self.description}: the worker says it is still set: "
                              f"{response.text}")  # fmt: skip


def _hooks(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class Corruption(StrEnum):
    BIT_FLIP = "bit_flip"
    TRUNCATE = "truncate"
    SWAP = "swap"  # replace the file with another version's copy of it


_MARKER = "marker.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _replace(path: Path, data_from: Path | bytes) -> None:
    tmp = path.with_name(f".{path.name}.ichaos-tmp")
    if isinstance(data_from, bytes):
        tmp.write_bytes(data_from)
    else:
        shutil.copyfile(data_from, tmp)
    tmp.replace(path)


class ModelCorruptionInjector(Injector):
    """Damage one registry file; revert restores the original bytes, verified by sha256.

    Before the file is touched, a backup and a marker are written under ``state_dir``, so a run
    killed mid-way leaves what :func:`restore_leftovers` needs to repair the registry first.
    """

    def __init__(
        self,
        target: Path,
        mode: Corruption,
        state_dir: Path,
        *,
        seed: int = 0,
        swap_with: Path | None = None,
    ) -> None:
        super().__init__()
        if mode is Corruption.SWAP and swap_with is None:
            raise ValueError("a swap corruption needs the file to swap in (swap_with)")
        self.target, self.mode, self.seed, self.swap_with = target, mode, seed, swap_with
        key = hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:16]
        self.slot = state_dir / "model-backups" / key

    @property
    def description(self) -> str:
        return f"{self.mode.value} corruption of {self.target}"

    def _apply(self) -> None:
        if not self.target.is_file():
            raise ApplyError(f"{self.description}: no such file")
        original = _sha256(self.target)
        self.slot.mkdir(parents=True, exist_ok=True)
        backup = self.slot / "original"
        shutil.copyfile(self.target, backup)
        if _sha256(backup) != original:
            shutil.rmtree(self.slot, ignore_errors=True)
            raise ApplyError(f"{self.description}: the backup does not match the original")
        damaged = self._damaged()
        same = (
            _sha256(damaged) == original
            if isinstance(damaged, Path)
            else (hashlib.sha256(damaged).hexdigest() == original)
        )
        if same:
            shutil.rmtree(self.slot, ignore_errors=True)
            raise ApplyError(
                f"{self.description}: the damaged file would be byte for byte the original "
                "(a swap with an identical file changes nothing)"
            )
        marker = {"target": str(self.target.resolve()), "sha256": original}
        (self.slot / _MARKER).write_text(json.dumps(marker))
        try:
            _replace(self.target, damaged)
            if _sha256(self.target) == original:
                raise ApplyError(f"{self.description}: read back, the file is unchanged")
        except BaseException:
            _restore(self.slot)
            raise

    def _damaged(self) -> bytes | Path:
        if self.mode is Corruption.SWAP:
            assert self.swap_with is not None
            return self.swap_with
        data = bytearray(self.target.read_bytes())
        rng = random.Random(self.seed)
        if self.mode is Corruption.TRUNCATE:
            return bytes(data[: rng.randrange(0, max(1, len(data)))])
        if not data:
            raise ApplyError(f"{self.description}: an empty file has no bit to flip")
        offset = rng.randrange(len(data))
        data[offset] ^= 1 << rng.randrange(8)
        return bytes(data)

    def _revert(self) -> None:
        _restore(self.slot)


def _restore(slot: Path) -> str:
    """Put a backed-up file back, check its digest, and remove the backup; returns the path."""
    marker = json.loads((slot / _MARKER).read_text())
    target = Path(marker["target"])
    _replace(target, slot / "original")
    actual = _sha256(target)
    if actual != marker["sha256"]:
        raise RevertError(
            f"restored {target} but its sha256 is {actual}, not {marker['sha256']}; "
            f"the backup stays in {slot}"
        )
    shutil.rmtree(slot)
    return str(target)


def restore_leftovers(
    state_dir: Path, *, log: Callable[[str], None] = lambda _m: None
) -> list[str]:
    """Restore every file a killed run left corrupted; returns the files restored."""
    root = state_dir / "model-backups"
    restored = []
    for slot in sorted(root.glob("*")) if root.is_dir() else []:
        if (slot / _MARKER).is_file() and (slot / "original").is_file():
            restored.append(_restore(slot))
            log(f"restored {restored[-1]} left corrupted by an earlier run")
        else:
            shutil.rmtree(slot, ignore_errors=True)  # a backup never armed: nothing was touched
    return restored
