"""GPU-style fault hooks of a worker: ``gpu_error``, ``hang``, ``slow`` and ``oom``.

The hooks act where real device faults surface: inside the decoding loop (``on_step``) and when
a request is admitted to a batch. On a CUDA device ``gpu_error`` triggers a real device-side
assert and ``oom`` a real failed allocation; on CPU they raise the typed errors a CUDA failure
maps to.
State is shared between the event loop (admin endpoints) and the inference thread, hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._errors import DeviceLostError, DeviceOutOfMemoryError


class FaultKind(StrEnum):
    GPU_ERROR = "gpu_error"
    HANG = "hang"
    SLOW = "slow"
    OOM = "oom"


@dataclass(frozen=True)
class FaultSnapshot:
    gpu_error: bool
    device_lost: bool
    hang: bool
    slow_ms_per_token: int
    oom_remaining: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_error": {"armed": self.gpu_error, "fired": self.device_lost},
            "hang": {"active": self.hang},
            "slow": {"active": self.slow_ms_per_token > 0, "ms_per_token": self.slow_ms_per_token},
            "oom": {"active": self.oom_remaining > 0, "remaining": self.oom_remaining},
        }


class FaultHooks:
    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._lock = threading.Lock()
        self._gpu_error = False
        self._device_lost = False
        self._slow_ms = 0
        self._oom_remaining = 0
        # Set while not hung; hang clears it. A separate event wakes slow sleepers on clear.
        self._running = threading.Event()
        self._running.set()
        self._slow_wake = threading.Event()

    # admin side ------------------------------------------------------------------------------
    def arm_gpu_error(self) -> None:
        with self._lock:
            self._gpu_error = True

    def hang(self) -> None:
        self._running.clear()

    def slow(self, ms_per_token: int) -> None:
        with self._lock:
            self._slow_ms = ms_per_token
            self._slow_wake.clear()

    def oom(self, count: int) -> None:
        with self._lock:
            self._oom_remaining = count

    def clear(self, kind: FaultKind) -> None:
        with self._lock:
            if kind is FaultKind.GPU_ERROR:
                self._gpu_error = False
            elif kind is FaultKind.SLOW:
                self._slow_ms = 0
                self._slow_wake.set()
            elif kind is FaultKind.OOM:
                self._oom_remaining = 0
        if kind is FaultKind.HANG:
            self._running.set()

    def clear_all(self) -> None:
        for kind in FaultKind:
            self.clear(kind)

    def snapshot(self) -> FaultSnapshot:
        with self._lock:
            return FaultSnapshot(
                gpu_error=self._gpu_error,
                device_lost=self._device_lost,
                hang=not self._running.is_set(),
                slow_ms_per_token=self._slow_ms,
                oom_remaining=self._oom_remaining,
            )

    @property
    def device_lost(self) -> bool:
        with self._lock:
            return self._device_lost

    # inference side --------------------------------------------------------------------------
    def on_step(self) -> None:
        """Called before every decoding step, on the inference thread."""
        self._running.wait()
        with self._lock:
            fire = self._gpu_error or self._device_lost
            slow_ms = self._slow_ms
        if fire:
            self._lose_device()
        if slow_ms:
            self._slow_wake.wait(slow_ms / 1000)

    def take_oom(self) -> None:
        """Consume one pending OOM, if any, by failing the request it was taken for."""
        with self._lock:
            if self._oom_remaining <= 0:
                return
            self._oom_remaining -= 1
        if self.device.startswith("cuda"):
            _real_cuda_oom()
        raise DeviceOutOfMemoryError(
            "out of memory: tried to allocate KV cache for this request (injected oom fault)"
        )

    def _lose_device(self) -> None:
        with self._lock:
            self._device_lost = True
        if self.device.startswith("cuda"):
            _real_cuda_device_error()
        raise DeviceLostError(
            "device lost: the accelerator stopped responding (injected gpu_error fault); "
            "the error is sticky and the worker will exit"
        )


def _real_cuda_device_error() -> None:
    import torch

    # An out-of-bounds gather fires a device-side assert: the CUDA context is then unusable,
    # exactly like a real sticky error, so the process has to exit.
    try:
        table = torch.zeros(4, device="cuda")
        index = torch.tensor([1 << 20], device="cuda")
        table[index].sum().item()
        torch.cuda.synchronize()
    except RuntimeError as exc:
        raise DeviceLostError(f"device lost (injected gpu_error fault): {exc}") from exc


def _real_cuda_oom() -> None:
    import torch

    free, _total = torch.cuda.mem_get_info()
    try:
        # Ask for more than is free so the caching allocator fails for real.
        block = torch.empty(free + (1 << 30), dtype=torch.uint8, device="cuda")
        del block
    except torch.cuda.OutOfMemoryError as exc:
        raise DeviceOutOfMemoryError(f"{exc} (injected oom fault)") from exc
