"""The canary controller: judge the canary by its error-budget burn, and roll it back.

Canary and primary outcomes are kept over a sliding window as SLO request records. Every
``evaluate_every`` the canary's availability and latency SLOs are evaluated over the window
with the ``slo`` library; when either burns its budget faster than ``burn_rate_threshold``
with at least ``min_requests`` canary requests seen, the canary's weight goes to 0 and the event
says why, with the canary's and the primary's numbers side by side. Promotion stays an admin
action.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from slo import SLO, AvailabilitySLI, LatencySLI, PeriodKind, RequestRecord, evaluate

from ._gateway_core import AttemptKind, Gateway
from ._stack_config import CanaryControllerConfig, PoolName


def record_of(kind: AttemptKind, status: int | None, latency_s: float, at: float) -> RequestRecord:
    if status is not None:
        return RequestRecord(at, status=status, latency_s=latency_s)
    # No HTTP answer: the record carries the failure class instead (timeout, connect, ...).
    error = None if kind is AttemptKind.OK else kind.value
    return RequestRecord(at, error=error or "transport", latency_s=latency_s)


class CanaryController:
    def __init__(self, gateway: Gateway, config: CanaryControllerConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.slos = (
            SLO(
                name="canary-availability",
                sli=AvailabilitySLI(),
                target=config.availability_target,
                period=PeriodKind.RUN,
            ),
            SLO(
                name="canary-latency",
                sli=LatencySLI(threshold=config.latency_threshold),
                target=config.latency_target,
                period=PeriodKind.RUN,
            ),
        )
        self.records: dict[PoolName, deque[RequestRecord]] = {
            PoolName.CANARY: deque(),
            PoolName.PRIMARY: deque(),
        }
        self.last_decision: dict[str, Any] = {}

    def observe(
        self, pool: PoolName, kind: AttemptKind, status: int | None, latency_s: float
    ) -> None:
        if pool in self.records and kind is not AttemptKind.CLIENT_ERROR:
            self.records[pool].append(record_of(kind, status, latency_s, time.monotonic()))

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window
        for records in self.records.values():
            while records and records[0].timestamp < horizon:
                records.popleft()

    def _burn(self, slo: SLO, pool: PoolName, now: float) -> tuple[float | None, float | None, int]:
        records = list(self.records[pool])
        if not records:
            return None, None, 0
        result = evaluate(slo, records, start=now - self.config.window, end=now)
        return result.burn_rate, result.error_ratio, result.total

    def evaluate(self, now: float | None = None) -> dict[str, Any] | None:
        """One decision; returns the rollback details when it rolled back."""
        now = time.monotonic() if now is None else now
        self._prune(now)
        if self.gateway.canary_weight <= 0:
            return None
        for slo in self.slos:
            burn, ratio, total = self._burn(slo, PoolName.CANARY, now)
            if total < self.config.min_requests or burn is None:
                continue
            self.last_decision = {"slo": slo.name, "canary_burn_rate": burn, "requests": total}
            if burn > self.config.burn_rate_threshold:
                primary_burn, primary_ratio, primary_total = self._burn(slo, PoolName.PRIMARY, now)
                details = {
                    "slo": slo.name,
                    "target": slo.target,
                    "window_s": self.config.window,
                    "threshold": self.config.burn_rate_threshold,
                    "canary": {"burn_rate": burn, "error_ratio": ratio, "requests": total},
                    "primary": {
                        "burn_rate": primary_burn,
                        "error_ratio": primary_ratio,
                        "requests": primary_total,
                    },
                }
                self.gateway.set_canary_weight(0.0, reason="rollback", **details)
                self.records[PoolName.CANARY].clear()
                return details
        return None

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.evaluate_every)
            self.evaluate()
