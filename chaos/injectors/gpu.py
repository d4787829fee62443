"""A reference worker's GPU fault hooks, set and cleared over its admin API."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import httpx

from chaos._errors import (
    ApplyError,
    RevertError,
)
from target_service import (
    ADMIN_TOKEN_HEADER,
    WORKER_FAULTS_PATH,
)

from ._base import Injector


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
