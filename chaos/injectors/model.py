"""Model files damaged on disk and restored byte for byte: the corruption itself (backed up
first, so a killed run's damage is repaired by the next), and the fault that makes the
servers serving the file load it."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from chaos._errors import (
    ApplyError,
    RevertError,
)

from ._base import Injector


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


class ModelFaultInjector(Injector):
    """Corrupt a registry file, then reload the replicas serving it; revert restores the bytes
    and reloads them again, so they come back serving the intact model."""

    def __init__(
        self, corruption: ModelCorruptionInjector, reload: Callable[[], None], label: str,
        *, restarts: bool = False, verify: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.corruption, self._reload, self.label = corruption, reload, label
        self._restarts, self._verify = restarts, verify

    @property
    def provokes(self) -> frozenset[str]:
        # A reload by restart: the harness itself ends the worker; its exit is no detection.
        return frozenset({"worker_exited", "service_exited"}) if self._restarts else frozenset()

    @property
    def description(self) -> str:
        return self.label

    def _apply(self) -> None:
        self.corruption.apply()
        try:
            self._reload()
        except BaseException:
            self.corruption.revert()
            raise

    def _revert(self) -> None:
        self.corruption.revert()
        try:
            if self._verify is not None:
                self._verify()
        finally:
            self._reload()
