"""SLO evaluation speed: every SLI kind, both budgeting methods and the burn-rate alert rules
over synthetic request records (1,000,000 by default; the goal is at most 2 s for those).

    .venv/bin/python bench/slo_eval.py [--quick] [--out PATH] [--records N] [--repeat N]

Writes JSON (top-level ``records``, ``seconds``, ``records_per_second``) and a Markdown table
beside it; by default bench/results/slo_eval.{json,md}. The timed part starts from the list
of ``RequestRecord`` objects (building the columnar ``RecordSet`` is included) and ends when
every SLO has its numbers, its alert intervals and a one-minute burn-rate series. Generating
the records is not timed. ``seconds`` is the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Run from a checkout: import this tree's slo even where an older editable install of the
# project predates the package.
sys.path.insert(0, str(HERE.parent))

from slo import (  # noqa: E402
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    DegradedSLI,
    LatencySLI,
    Occurrences,
    RecordSet,
    RequestRecord,
    Timeslices,
    evaluate,
    format_duration,
    parse_duration,
)

GOAL_SECONDS = 2.0
GOAL_RECORDS = 1_000_000
TIMELINE = parse_duration("1d")


def synthetic_records(count: int, seed: int = 7) -> list[RequestRecord]:
    """A day of traffic with a few faults: a 5xx burst, load shedding (429), a partition
    (transport errors), a latency spike and a stretch served by the fallback."""
    rng = random.Random(seed)
    step = TIMELINE / count
    hour = 3600.0
    records = []
    for i in range(count):
        t = i * step + rng.random() * step
        in_5xx = 6 * hour <= t < 6.5 * hour
        in_shed = 10 * hour <= t < 10.25 * hour
        in_partition = 14 * hour <= t < 14.1 * hour
        in_slow = 18 * hour <= t < 19 * hour
        in_fallback = 20 * hour <= t < 21 * hour
        roll = rng.random()
        latency = rng.lognormvariate(-2.0, 0.6) * (4.0 if in_slow else 1.0)
        streamed = roll < 0.7
        if (in_partition and roll < 0.9) or roll < 0.0001:
            records.append(RequestRecord(t, latency_s=None, error="connect"))
            continue
        if (in_5xx and roll < 0.2) or roll < 0.0003:
            status = 503
        elif in_shed and roll < 0.3:
            status = 429
        else:
            status = 200
        records.append(
            RequestRecord(
                t,
                status=status,
                latency_s=latency,
                ttft_s=latency * 0.3 if streamed and status == 200 else None,
                degraded=(in_fallback and roll < 0.8) or roll < 0.001,
            )
        )
    return records


def slos() -> list[SLO]:
    day = parse_duration("1d")
    minute = parse_duration("1m")
    return [
        SLO(name="availability", sli=AvailabilitySLI(), target=0.999, period=day),
        SLO(
            name="availability-timeslices",
            sli=AvailabilitySLI(),
            target=0.99,
            period=day,
            budgeting=Timeslices(slice=minute, slice_target=0.95),
        ),
        SLO(name="latency-800ms", sli=LatencySLI(threshold=0.8), target=0.99, period=day),
        SLO(
            name="latency-1s-timeslices",
            sli=LatencySLI(threshold=1.0),
            target=0.99,
            period=day,
            budgeting=Timeslices(slice=minute, slice_target=0.9),
        ),
        SLO(name="ttft-300ms", sli=TTFTSLI(threshold=0.3), target=0.99, period=day),
        SLO(
            name="degraded-share",
            sli=DegradedSLI(),
            target=0.98,
            period=day,
            budgeting=Occurrences(),
        ),
    ]


def run_once(records: list[RequestRecord], objectives: list[SLO]) -> dict[str, Any]:
    cpu_started = time.process_time()
    started = time.perf_counter()
    record_set = RecordSet(records)
    built = time.perf_counter()
    per_slo = []
    for slo in objectives:
        began = time.perf_counter()
        result = evaluate(slo, record_set)
        evaluated = time.perf_counter()
        alerts = result.alerts()
        alerted = time.perf_counter()
        series = result.series(60.0)
        done = time.perf_counter()
        per_slo.append(
            {
                "result": result,
                "alerts": alerts,
                "series_points": len(series),
                "evaluate_s": evaluated - began,
                "alerts_s": alerted - evaluated,
                "series_s": done - alerted,
            }
        )
    finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "record_set_s": built - started,
        "per_slo": per_slo,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        # Other work on the machine slows a CPU-bound benchmark: say how busy it was.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def report(
    count: int, runs: list[dict[str, Any]], generate_s: float, quick: bool
) -> dict[str, Any]:
    seconds = statistics.median(run["seconds"] for run in runs)
    # The per-SLO timings shown are those of the median run.
    median_run = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    slo_rows = []
    for entry in median_run["per_slo"]:
        result = entry["result"]
        summary = result.to_dict()
        summary["alerts"] = [
            {
                "rule": alert.rule.name,
                "factor": alert.factor,
                "long_window": format_duration(alert.rule.long_window),
                "short_window": format_duration(alert.rule.short_window),
                "intervals": [[i.fired_at, i.cleared_at] for i in alert.intervals],
            }
            for alert in entry["alerts"]
        ]
        summary["timing_s"] = {
            "evaluate": entry["evaluate_s"],
            "alerts": entry["alerts_s"],
            "series": entry["series_s"],
        }
        summary["series_points"] = entry["series_points"]
        slo_rows.append(summary)
    return {
        "benchmark": "slo_eval",
        "records": count,
        "seconds": seconds,
        "records_per_second": count / seconds,
        "cpu_seconds": statistics.median(run["cpu_seconds"] for run in runs),
        "best_seconds": min(run["seconds"] for run in runs),
        "goal": f"<= {GOAL_SECONDS:g} s for {GOAL_RECORDS:,} records",
        # Alert evaluation costs the same for any number of records (one instant per step
        # over the period), so the goal says nothing about smaller runs.
        "within_goal": seconds <= GOAL_SECONDS if count >= GOAL_RECORDS else None,
        "quick": quick,
        "repeats": [run["seconds"] for run in runs],
        "record_set_s": statistics.median(run["record_set_s"] for run in runs),
        "generate_records_s": generate_s,
        "timeline_s": TIMELINE,
        "slos": slo_rows,
        "machine": machine(),
    }


def markdown(data: dict[str, Any]) -> str:
    verdict = {True: "met", False: "NOT met", None: "applies to 1,000,000 records"}
    lines = [
        "# SLO evaluation benchmark",
        "",
        f"{data['records']:,} synthetic records over {format_duration(data['timeline_s'])}: "
        f"**{data['seconds']:.3f} s** median of {len(data['repeats'])} "
        f"({data['records_per_second']:,.0f} records/s; goal {data['goal']}: "
        f"{verdict[data['within_goal']]}); best {data['best_seconds']:.3f} s, "
        f"CPU {data['cpu_seconds']:.3f} s. "
        f"Building the columnar record set: {data['record_set_s']:.3f} s.",
        "",
        "| SLO | SLI | budgeting | SLI value | consumed | burn rate | alerts fired "
        "| evaluate s | alerts s | series s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["slos"]:
        fired = ", ".join(a["rule"] for a in row["alerts"] if a["intervals"]) or "none"
        timing = row["timing_s"]
        lines.append(
            f"| {row['name']} | {row['sli_kind']} | {row['budgeting']} | {row['sli']:.5f} "
            f"| {row['consumed']:.3f} | {row['burn_rate']:.2f} | {fired} "
            f"| {timing['evaluate']:.3f} | {timing['alerts']:.3f} | {timing['series']:.3f} |"
        )
    info = data["machine"]
    load = info["load_average_1m"]
    lines += [
        "",
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, {info['implementation']} "
        f"{info['python']}, {info['platform']}; 1-minute load average at the end: "
        f"{'unknown' if load is None else f'{load:.2f}'}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 records, one repeat")
    parser.add_argument("--records", type=int, help="how many records (default 1,000,000)")
    parser.add_argument("--repeat", type=int, help="timed repeats (default 3, quick 1)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "slo_eval.json")
    args = parser.parse_args(argv)
    count = args.records or (100_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)
    began = time.perf_counter()
    records = synthetic_records(count)
    generate_s = time.perf_counter() - began
    objectives = slos()
    runs = [run_once(records, objectives) for _ in range(repeat)]
    data = report(count, runs, generate_s, args.quick)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(data), encoding="utf-8")
    print(markdown(data))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
