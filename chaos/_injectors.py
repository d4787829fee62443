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

from ._errors import ApplyError, RevertError
from ._toxiproxy import Toxic, ToxiproxyClient, ToxiproxyError


class Injector(ABC):
    """Base of every fault: subclasses implement ``_apply`` and ``_revert``."""

    def __init__(self) -> None:
        self.applied = False

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

    def _revert(self) -> None:
        try:
            self.client.remove_toxic(self.proxy, self.toxic.name)
        except ToxiproxyError as exc:
            if exc.status != 404:  # already gone is reverted
                raise


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

    def _revert(self) -> None:
        self.client.update_proxy(self.proxy, enabled=True)


class SignalKind(StrEnum):
    KILL = "kill"  # SIGKILL; reverting is the supervisor's restart, not ours
    TERMINATE = "terminate"  # SIGTERM; likewise
    PAUSE = "pause"  # SIGSTOP, reverted with SIGCONT


_SIGNALS = {SignalKind.KILL: signal.SIGKILL, SignalKind.TERMINATE: signal.SIGTERM,
            SignalKind.PAUSE: signal.SIGSTOP}  # fmt: skip


class SignalInjector(Injector):
    """A signal to one or more processes (workers or the gateway), by pid."""

    def __init__(self, pids: list[int], kind: SignalKind, label: str = "") -> None:
        super().__init__()
        if not pids:
            raise ValueError("SignalInjector needs at least one pid")
        self.pids, self.kind, self.label = pids, kind, label or f"pids {pids}"

    @property
    def description(self) -> str:
        return f"{self.kind.value} of {self.label}"

    def _apply(self) -> None:
        sent: list[int] = []
        try:
            for pid in self.pids:
                os.kill(pid, _SIGNALS[self.kind])
                sent.append(pid)
        except ProcessLookupError as exc:
            # Leave nothing half-applied: resume whatever this pause already stopped.
            if self.kind is SignalKind.PAUSE:
                for pid in sent:
                    _continue(pid)
            raise ApplyError(
                f"{self.description}: no process {exc.filename or ''}".strip()
            ) from exc

    def _revert(self) -> None:
        if self.kind is SignalKind.PAUSE:
            for pid in self.pids:
                _continue(pid)


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
        self.headers = {"X-Admin-Token": token}

    @property
    def description(self) -> str:
        return f"{self.kind.value} fault hook on {self.url}"

    def _apply(self) -> None:
        response = httpx.post(
            f"{self.url}/admin/faults/{self.kind.value}", json=self.params, headers=self.headers,
            timeout=5,
        )  # fmt: skip
        if response.status_code != 200:
            raise ApplyError(f"{self.description}: HTTP {response.status_code}: {response.text}")

    def _revert(self) -> None:
        try:
            response = httpx.delete(
                f"{self.url}/admin/faults/{self.kind.value}", headers=self.headers, timeout=5
            )
        except httpx.ConnectError:
            return  # the worker is gone (gpu_error ends it): its fault state went with it
        if response.status_code != 200:
            raise RevertError(f"{self.description}: clear: HTTP {response.status_code}")


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
        marker = {"target": str(self.target.resolve()), "sha256": original}
        (self.slot / _MARKER).write_text(json.dumps(marker))
        try:
            _replace(self.target, self._damaged())
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
