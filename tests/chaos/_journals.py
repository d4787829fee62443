"""Fixture journals, written the way the runner writes them, for the report tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chaos import (
    Evidence,
    FaultResult,
    Judgement,
    Outcome,
    RequestCounts,
    SLOResult,
    Status,
    Verdict,
    load_scenario,
)
from chaos._verdict import Abort, PeriodCost

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "primary-partition.yaml"


def make_run(
    reports: Path,
    name: str,
    *,
    status: str = "passed",
    wall: float = 1_700_000_000.0,
    rate: int = 20,
    seconds: int = 20,
    stream: bool = False,
    torn: bool = False,
) -> Path:
    """A journal as the runner writes it: 503s and fallback answers during a fault at 6–10 s."""
    loaded = load_scenario(SCENARIO)
    run_dir = reports / name
    run_dir.mkdir(parents=True)
    events: list[dict[str, Any]] = [
        {"type": "run_started", "t": None, "wall": wall, "run_id": name,
         "scenario": "primary-partition", "file": str(SCENARIO), "text": loaded.text + "# <b>\n",
         "seed": 3, "backend": "local", "environment": {"ichaos": "0.1.0", "python": "3.11"},
         "slos": [s.model_dump(mode="json") for s in loaded.slos]},
        {"type": "target_ready", "t": None, "wall": wall, "target": {"url": "http://127.0.0.1:1"}},
        {"type": "load_started", "t": 0.0, "wall": wall, "scheduled": rate * seconds,
         "duration": float(seconds)},
        {"type": "fault_applied", "t": 6.0, "wall": wall + 6, "fault": "cut-primary",
         "kind": "partition", "description": "proxy primary-0 disabled", "planned_at": 6.0,
         "planned_end": 10.0},
        {"type": "service_event", "t": 6.1, "wall": wall + 6.1,
         "event": {"kind": "fallback_on", "t": 6.1, "seq": 5}},
    ]  # fmt: skip
    for i in range(rate * seconds):
        t = i / rate
        inside = 6.0 <= t < 10.0
        status_code = 503 if inside and i % 2 else 200
        events.append({
            "type": "request", "t": t + 0.05, "wall": wall + t, "index": i, "scheduled": t,
            "sent": t, "end": t + 0.05, "status": status_code, "error": None,
            "degraded": inside and status_code == 200, "latency_s": 0.05 + (0.2 if inside else 0),
            "ttft_s": 0.02 if stream else None, "model": "primary", "version": "v1", "tokens": 8,
            # Seven gaps of 3 ms (15 ms inside the fault) between the eight streamed tokens.
            "gaps": [0.015 if inside else 0.003] * 7 if stream else [],
            "tpot_s": (0.015 if inside else 0.003) if stream else None,
            "output_tps": 8 / (0.05 + (0.2 if inside else 0)) if stream else None,
        })  # fmt: skip
    if status != "incomplete":
        events += [
            {"type": "fault_reverted", "t": 10.0, "wall": wall + 10, "fault": "cut-primary"},
            {"type": "service_event", "t": 10.2, "wall": wall + 10.2,
             "event": {"kind": "fallback_off", "t": 10.2, "seq": 6}},
        ]  # fmt: skip
        if status == "aborted":
            events.append({"type": "abort", "t": 11.0, "wall": wall + 11,
                           "reason": "error ratio 50.0% over the last 5s > 20.0%"})  # fmt: skip
        events.append({
            "type": "load_finished", "t": float(seconds), "wall": wall + seconds,
            "generator": {"scheduled": rate * seconds, "started": rate * seconds, "late": 0,
                          "dropped": 0, "lag_p50_ms": 0.5, "lag_p99_ms": 1.5, "lag_max_ms": 3.0,
                          "cpu_share": 0.1, "reasons": [], "valid": True},
        })  # fmt: skip
        passed = status == "passed"
        verdict = Verdict(
            run_id=name, scenario="primary-partition", description="cut primary",
            status=Status(status), seed=3, backend="local", file="primary-partition.yaml",
            started_wall=wall, duration_s=float(seconds),
            abort=Abort(reason="error ratio", t=11.0) if status == "aborted" else None,
            expectations=[Outcome(
                kind="fallback", description="fallback served ≥ 60%",
                judgement=Judgement.MET if passed else Judgement.NOT_MET, passed=passed,
                measured=0.5, bound=0.6, evidence=Evidence(count=80, unit="requests"),
                detail="40 of 80 answers",
            )],
            slos=[SLOResult(
                name="chat-availability", sli_kind="availability", budgeting="occurrences",
                target=0.999, budget=0.001, period_s=2592000.0, start=0.0,
                end=float(seconds), elapsed_s=float(seconds), elapsed_share=seconds / 2592000,
                good=360, bad=40, total=400, excluded=0, sli=0.9, error_ratio=0.1,
                burn_rate=100.0, run_consumed=100.0, consumed=0.0008, remaining=0.9992,
                time_to_exhaustion_s=None, met=False,
                # 10% bad over 20 s: 2 s of full-outage equivalent of a 43.2-minute budget.
                period_cost=PeriodCost(period_s=2592000.0, budget_minutes=43.2,
                                       breached_minutes=2 / 60, consumed=2 / 2592.0),
            )],
            faults=[FaultResult(
                name="cut-primary", kind="partition", at=6.0, planned_end=10.0, applied=6.0,
                reverted=10.0, time_to_detect_s=0.1, first_failure_s=0.05,
            )],
            time_to_detect_s=0.1, time_to_recover_s=0.0,
            requests=RequestCounts(total=rate * seconds, ok=300),
        ).to_json()  # fmt: skip
        (run_dir / "verdict.json").write_text(json.dumps(verdict))  # as the runner does
        events.append({"type": "verdict", "t": float(seconds), "wall": wall + seconds,
                       "verdict": verdict})  # fmt: skip
        events.append({"type": "run_finished", "t": float(seconds), "wall": wall + seconds})
    lines = [json.dumps(e) for e in events]
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"type": "request", "t": 19.9, "ind'  # a crash mid-write
    (run_dir / "journal.jsonl").write_text(text, encoding="utf-8")
    return run_dir
