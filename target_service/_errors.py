"""Exceptions raised by the reference service.

ServiceError
├── RegistryError
│   ├── ModelNotFoundError      the model or version is not in the registry
│   ├── ManifestError           manifest.json is missing or malformed
│   └── IntegrityError          files do not match the manifest (carries every problem)
├── ModelLoadError              a verified folder could not be loaded by transformers
├── InferenceError              a generate call failed
│   ├── DeviceLostError         the accelerator is gone (sticky: the process must exit)
│   └── DeviceOutOfMemoryError  the accelerator ran out of memory for this request
├── WorkerProcessError          a worker process did not reach the state expected of it
└── StackError                  the stack cannot be started, found or stopped

The gateway's control flow, never raised out of it (each becomes an HTTP answer):
Shed                            a pool is at its in-flight limit: 429 with Retry-After
Unavailable                     neither primary nor fallback could answer: 503
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ServiceError(Exception):
    """Base of every error the reference service raises on purpose."""


class RegistryError(ServiceError):
    """A problem with the model registry."""


class ModelNotFoundError(RegistryError):
    """The requested model or version does not exist in the registry."""


class ManifestError(RegistryError):
    """A manifest is missing, unreadable or malformed."""


class ProblemKind(StrEnum):
    MISMATCH = "mismatch"
    SIZE = "size"
    MISSING = "missing"
    UNEXPECTED = "unexpected file"


@dataclass(frozen=True)
class FileProblem:
    """One file that does not match its manifest entry."""

    path: str
    kind: ProblemKind
    expected: str | None = None
    actual: str | None = None

    def describe(self) -> str:
        if self.kind is ProblemKind.MISMATCH:
            return f"{self.path}: sha256 mismatch: expected {self.expected}, actual {self.actual}"
        if self.kind is ProblemKind.SIZE:
            return (
                f"{self.path}: size mismatch: expected {self.expected} bytes, actual {self.actual}"
            )
        if self.kind is ProblemKind.MISSING:
            return f"{self.path}: missing (expected sha256 {self.expected})"
        return f"{self.path}: unexpected file (not in the manifest)"


class IntegrityError(RegistryError):
    """The files of a model version do not match its manifest; loading is refused."""

    def __init__(self, ref: str, problems: list[FileProblem]) -> None:
        self.ref = ref
        self.problems = problems
        lines = "; ".join(p.describe() for p in problems)
        super().__init__(f"{ref}: integrity check failed: {lines}")


class ModelLoadError(ServiceError):
    """A verified model folder could not be loaded."""


class InferenceError(ServiceError):
    """A generate call failed. ``error_type`` is the stable name clients see."""

    error_type = "inference_error"


class DeviceLostError(InferenceError):
    """The device is lost; like a sticky CUDA error, nothing more can run in this process."""

    error_type = "device_lost"


class DeviceOutOfMemoryError(InferenceError):
    """The device could not allocate memory for this request."""

    error_type = "out_of_memory"
