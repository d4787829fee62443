"""What every target made from a services stack file has in common, processes or containers:
services by name that faults can signal and restart, model directories checksummed at the start
and verified byte for byte, and the events that say what happened to the services."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from chaos._errors import ApplyError, BackendError, RevertError
from chaos._stackfile import LoadedStack
from chaos.injectors import Injector, SignalKind

from ._target import Target


def checksum_dir(folder: Path) -> dict[str, str]:
    """The sha256 of every file under ``folder``, by relative path."""
    sums = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            sums[str(path.relative_to(folder))] = digest.hexdigest()
    return sums


def dir_differences(folder: Path, expected: dict[str, str]) -> list[str]:
    """How ``folder`` differs from its checksums (empty: byte for byte the same)."""
    found = checksum_dir(folder) if folder.is_dir() else {}
    problems = [f"{name} changed" for name, digest in expected.items()
                if name in found and found[name] != digest]  # fmt: skip
    problems += [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} is new" for name in found if name not in expected]
    return problems


class StackTarget(Target):
    """A stack file's services, however they run. Subclasses start them and say how a service
    is reached, signalled and restarted."""

    def __init__(self, stack: LoadedStack, run_dir: Path) -> None:
        super().__init__()
        self.stack, self.run_dir = stack, run_dir
        self._lock = threading.RLock()
        self._events: list[dict[str, Any]] = []
        self._seq = 0
        self._manifests: dict[str, tuple[Path, dict[str, str]]] = {}

    # -- what subclasses do ----------------------------------------------------------------

    def service_url(self, name: str) -> str:
        """Where the service listens now (its own address, not through a proxy)."""
        raise NotImplementedError

    def service_signal(self, name: str, kind: SignalKind) -> Injector:
        """A kill, terminate or pause of the service."""
        raise NotImplementedError

    def restart_service(self, name: str) -> None:
        """End the service and start it again at once, whatever its restart policy."""
        raise NotImplementedError

    # -- events ------------------------------------------------------------------------------

    def _event(self, kind: str, **details: Any) -> None:
        with self._lock:
            self._seq += 1
            self._events.append({"seq": self._seq, "kind": kind, "wall": time.time(), **details})

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events if e["seq"] > since]

    # -- model directories -----------------------------------------------------------------

    def _checksum_models(self) -> None:
        """Every declared model directory's checksums, kept and written to the run directory."""
        for name in self.stack.stack.services:
            folder = self.stack.model_dir(name)
            if folder is None:
                continue
            if not folder.is_dir():
                raise BackendError(f"service {name}: model_dir {folder} is not a directory")
            sums = checksum_dir(folder)
            self._manifests[name] = (folder, sums)
            out = self.run_dir / "model-dirs" / f"{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"dir": str(folder), "sha256": sums}, indent=1))

    def model_dir(self, name: str) -> Path:
        folder = self.stack.model_dir(name)
        if folder is None:
            raise ApplyError(f"service {name} declares no model_dir")
        return folder

    def verify_model_dir(self, name: str) -> None:
        """Raise RevertError unless the service's model directory is what it was at the start."""
        folder, sums = self._manifests[name]
        problems = dir_differences(folder, sums)
        if problems:
            raise RevertError(f"{folder} is not as it was at the start of the run: "
                              + ", ".join(problems[:5]))  # fmt: skip

    def _model_dir_problems(self) -> list[str]:
        """What is not as it was at the start, for every model directory (said at the stop)."""
        errors = []
        for name, (folder, sums) in self._manifests.items():
            problems = dir_differences(folder, sums)
            if problems:
                errors.append(f"service {name}'s model directory {folder} is not as it was at "
                              f"the start: {', '.join(problems[:5])}")  # fmt: skip
        return errors


def service_model_path(target: StackTarget, service: str, file: str) -> Path:
    """``file`` in the service's model directory, refused unless it resolves inside it."""
    home = target.model_dir(service).resolve()
    path = home / file
    if not path.resolve().is_relative_to(home):
        raise ApplyError(f"{service}/{file} leads outside the model directory {home}")
    return path
