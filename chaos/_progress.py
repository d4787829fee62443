"""Progress on the terminal: a live line per second on a TTY, plain lines otherwise (CI logs).

An observer like any other: it only reads run events."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from ._events import EventType, RunEvent
from ._journal import PAGE
from ._verdict import Judgement, Verdict


def _t(event: RunEvent) -> str:
    return f"{event.t:7.2f}s" if event.t is not None else "        "


class Progress:
    def __init__(self, stream: IO[str] | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.counts: Counter[str] = Counter()
        self._last = 0.0
        self._status = ""
        self._run_dir: Path | None = None

    def _line(self, text: str) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self._status = ""
        self.stream.flush()

    def __call__(self, event: RunEvent) -> None:
        data: dict[str, Any] = event.data
        kind = event.type
        if kind is EventType.REQUEST:
            self._count(data)
            return
        if kind is EventType.RUN_STARTED:
            self._run_dir = Path(str(data["run_dir"])) if data.get("run_dir") else None
            self._line(f"▶ {data['scenario']} (seed {data['seed']}, backend {data['backend']})")
        elif kind is EventType.TARGET_READY:
            self._line(f"  target ready at {data['target'].get('url')}")
        elif kind is EventType.PROBE and (not data["ok"] or data["phase"] != "during"):
            mark = "ok" if data["ok"] else "FAILED"
            self._line(
                f"{_t(event)} probe {data['probe']} ({data['phase']}): {mark} — {data['detail']}"
            )
        elif kind is EventType.LOAD_STARTED:
            self._line(f"{_t(event)} load: {data['scheduled']} requests over {data['duration']:g}s")
        elif kind is EventType.FAULT_APPLIED:
            self._line(f"{_t(event)} ⚡ {data['fault']}: {data['description']}")
        elif kind is EventType.FAULT_REVERTED:
            acted = ""
            if data.get("affected") is not None:
                acted = f" (acted on {data['affected']} of {data['seen']} answers)"
            self._line(f"{_t(event)} ↺ {data['fault']} reverted{acted}")
        elif kind is EventType.FAULT_FAILED:
            self._line(f"{_t(event)} ✗ {data['fault']}: {data['stage']} failed: {data['error']}")
        elif kind is EventType.SERVICE_EVENT:
            service = data["event"]
            details = {k: v for k, v in service.items()
                       if k not in {"seq", "kind", "wall", "monotonic", "t"}}  # fmt: skip
            self._line(f"{_t(event)}   service: {service.get('kind')} {details or ''}".rstrip())
        elif kind is EventType.ABORT:
            self._line(f"{_t(event)} ■ abort: {data['reason']}")
        elif kind is EventType.MESSAGE:
            self._line(f"  {data['text']}")
        elif kind is EventType.REPAIR:
            self._line(f"  repair: {data['text']}")
        elif kind is EventType.VERDICT:
            self._verdict(data["verdict"])
        elif kind is EventType.RUN_FINISHED and self._run_dir is not None:
            page = self._run_dir / PAGE
            if page.is_file():  # an observer before this one wrote it
                self._line(f"  report: {page}")

    def _count(self, data: dict[str, Any]) -> None:
        if data.get("cancelled"):
            self.counts["cancelled"] += 1
        elif data.get("error"):
            self.counts["error"] += 1
        elif data.get("status") == 200:
            self.counts["degraded" if data.get("degraded") else "ok"] += 1
        else:
            self.counts[str(data.get("status"))] += 1
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            summary = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            if self.live:
                self.stream.write(f"\r\x1b[2K  requests: {summary}")
                self._status = summary
                self.stream.flush()

    def _verdict(self, verdict: Verdict) -> None:
        summary = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        counts = verdict.requests
        if counts.amplification is not None and counts.attempts > counts.total - counts.cancelled:
            summary += f"; {counts.attempts} attempts (×{counts.amplification:.2f})"
        self._line(f"  requests: {summary}")
        for name, client in counts.clients.items():
            amp = "—" if client.amplification is None else f"×{client.amplification:.2f}"
            self._line(f"    client {name}: {client.requests} requests, {client.attempts} "
                       f"attempts ({amp}), {client.shed} shed with 429, "
                       f"{client.cancelled} cancelled")  # fmt: skip
        for outcome in verdict.expectations:
            value = "—" if outcome.measured is None else f"{outcome.measured:.4g}"
            detail = f"; {outcome.detail}" if outcome.detail else ""
            if outcome.judgement is Judgement.NO_DATA:
                value = "no data" + (" (allowed)" if outcome.passed else "")
            mark = "✓" if outcome.passed else "✗"
            self._line(f"  {mark} {outcome.description}: {value} ({outcome.evidence}{detail})")
        for slo in verdict.slos:
            consumed = (
                "no events"
                if slo.run_consumed is None
                else (f"{slo.run_consumed:.1%} of the run's budget consumed")
            )
            self._line(f"  SLO {slo.name}: SLI {slo.sli}, target {slo.target:g}, {consumed}")
        figures = [
            ("time to detect", verdict.time_to_detect_s),
            ("time to alert", verdict.time_to_alert_s),
            ("time to recover", verdict.time_to_recover_s),
        ]
        if any(value is not None for _, value in figures):
            shown = [f"{label} {'—' if v is None else f'{v:.2f}s'}" for label, v in figures
                     if v is not None or label != "time to alert"]  # fmt: skip
            since = verdict.recovered_since
            after = "" if since is None else f" (recovery counted from {since:.2f}s)"
            self._line(f"  {', '.join(shown)}{after}")
        if verdict.generator is not None and not verdict.generator.valid:
            reasons = "; ".join(verdict.generator.reasons)
            self._line(f"  ! invalid: the load generator's figures cannot be trusted: {reasons}")
        for error in verdict.harness_errors:
            self._line(f"  ! harness error: {error}")
        if verdict.abort:
            self._line(f"  ! aborted: {verdict.abort.reason}")
        word = verdict.status.upper().replace("_", " ")
        self._line(f"{word} {verdict.scenario} → {verdict.run_id}")
