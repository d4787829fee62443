"""The open-loop load generator side by side with vegeta, against one trivial loopback endpoint.

    .venv/bin/python bench/loadgen.py [--quick] [--out PATH] [--seconds S]

At 500, 1,000 and 2,000 requests/s (10 s each; ``--quick``: 3 s), ichaos's generator and then
vegeta (built with the Go toolchain into .ichaos/bin on first use) send the same request to the
same endpoint (``bench/_trivial_server.py``, its own process). For each: achieved rate, schedule
lag p99 and latency p50/p99. Then a stall test at 1,000/s: the endpoint stalls once for 1 s,
and both tools' p99 must show it.

Definitions, identical for both tools: achieved rate = (sent - 1) / (last send - first send);
lag of request i = its send time - (first send + i / rate). Latency is what each tool reports:
ichaos from the *scheduled* time (so a late send is counted; no coordinated omission), vegeta
from its own send time.

Writes JSON (top-level ``rate_error_pct_at_2000``, ``lag_p99_ms_at_2000``,
``p50_ratio_vs_vegeta``, ``p99_ratio_vs_vegeta``, the ratios at 2,000/s) and a Markdown table;
by default bench/results/loadgen.{json,md}. Goals: rate within 1 % at 2,000/s, lag p99 ≤ 2 ms,
latency percentiles within 10 % of vegeta's.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import machine, percentile, server_process  # noqa: E402

from chaos import Constant, LoadGenerator, RequestSpec, schedule  # noqa: E402

VEGETA_MODULE = "github.com/tsenart/vegeta/v12"
VEGETA_VERSION = "v12.13.0"
RATES = (500, 1000, 2000)
STALL_RATE, STALL_AT = 1000, 2.0
BODY = {"prompt": "hi", "max_new_tokens": 1}


def vegeta_binary() -> Path:
    bin_dir = Path(os.environ.get("ICHAOS_BIN_DIR", ROOT / ".ichaos" / "bin"))
    binary, stamp = bin_dir / "vegeta", bin_dir / "vegeta.version"
    if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == VEGETA_VERSION:
        return binary
    go = shutil.which("go")
    if go is None:
        sys.exit("error: vegeta is built with the Go toolchain: install Go >= 1.22 and re-run")
    print(f"building vegeta {VEGETA_VERSION} into {bin_dir} ...", file=sys.stderr)
    bin_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(bin_dir)}
    subprocess.run([go, "install", f"{VEGETA_MODULE}@{VEGETA_VERSION}"], env=env, check=True)
    stamp.write_text(VEGETA_VERSION + "\n")
    return binary


def trivial_server() -> AbstractContextManager[str]:
    return server_process(HERE / "_trivial_server.py")


def summarize(sends: list[float], latencies: list[float], ok: int, rate: float) -> dict[str, Any]:
    """``sends`` in seconds, in schedule order; ``latencies`` in seconds."""
    first = sends[0]
    lags = [max(0.0, s - (first + i / rate)) for i, s in enumerate(sends)]
    span = sends[-1] - first
    achieved = (len(sends) - 1) / span if span > 0 else float("nan")
    return {
        "target_rate": rate,
        "sent": len(sends),
        "ok": ok,
        "achieved_rate": achieved,
        "rate_error_pct": abs(achieved - rate) / rate * 100,
        "lag_p99_ms": percentile(lags, 99) * 1000,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
    }


def stall_later(url: str, after: float) -> threading.Timer:
    timer = threading.Timer(after, lambda: httpx.post(f"{url}/stall", timeout=5))
    timer.start()
    return timer


def run_ichaos(url: str, rate: float, seconds: float, stall: bool = False) -> dict[str, Any]:
    def request(_index: int) -> RequestSpec:
        return RequestSpec(BODY)

    # vegeta opens as many connections as a stall needs; so may we, here.
    generator = LoadGenerator(
        url, schedule(Constant(rate), seconds), request, timeout_s=10, max_in_flight=10_000
    )

    def stall_when_started() -> None:  # the stall is due STALL_AT after the generator's t = 0
        if generator.started.wait(10):
            stall_later(url, STALL_AT)

    if stall:
        threading.Thread(target=stall_when_started, daemon=True).start()
    result = asyncio.run(generator.run())
    records = sorted(result.records, key=lambda r: r.index)
    sends = [r.sent for r in records]
    latencies = [r.latency_s for r in records if r.latency_s is not None]
    ok = sum(1 for r in records if r.status == 200 and r.error is None)
    summary = summarize(sends, latencies, ok, rate)
    from_send = [r.end - r.sent for r in records if r.end is not None]
    summary["latency_from_send_p50_ms"] = percentile(from_send, 50) * 1000
    summary["latency_from_send_p99_ms"] = percentile(from_send, 99) * 1000
    summary["cpu_share"] = result.health.cpu_share
    summary["valid"] = result.health.valid
    return summary


def run_vegeta(
    vegeta: Path, url: str, rate: float, seconds: float, stall: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps(BODY))
        targets = Path(tmp) / "targets.txt"
        targets.write_text(f"POST {url}/v1/generate\nContent-Type: application/json\n@{body}\n")
        out = Path(tmp) / "results.bin"
        timer = stall_later(url, STALL_AT + 0.05) if stall else None  # vegeta starts in ~50 ms
        subprocess.run(
            [str(vegeta), "attack", f"-rate={rate:g}/1s", f"-duration={seconds:g}s",
             f"-targets={targets}", f"-output={out}", "-timeout=10s"],
            check=True,
        )  # fmt: skip
        if timer is not None:
            timer.cancel()
        encoded = subprocess.run(
            [str(vegeta), "encode", "-to=csv", str(out)], check=True, capture_output=True,
            text=True,
        ).stdout  # fmt: skip
    rows = []
    # timestamp (ns), code, latency (ns), bytes out, bytes in, error, body, attack, seq, ...
    for row in csv.reader(io.StringIO(encoded)):
        rows.append((int(row[8]), int(row[0]) / 1e9, int(row[2]) / 1e9, int(row[1])))
    rows.sort()
    sends = [r[1] for r in rows]
    latencies = [r[2] for r in rows]
    ok = sum(1 for r in rows if r[3] == 200)
    return summarize(sends, latencies, ok, rate)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per rate instead of 10 s")
    parser.add_argument("--seconds", type=float, help="seconds per rate (overrides --quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loadgen.json")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    vegeta = vegeta_binary()
    rows: list[dict[str, Any]] = []
    with trivial_server() as url:
        run_ichaos(url, 200, 1.0)  # warm-up: imports, connections
        for rate in RATES:
            for tool, fn in (("ichaos", run_ichaos), ("vegeta", None)):
                print(f"{tool} at {rate}/s for {seconds:g}s ...", file=sys.stderr)
                if fn is None:
                    row = run_vegeta(vegeta, url, rate, seconds)
                else:
                    row = fn(url, rate, seconds)
                rows.append({"tool": tool, "test": "rate", **row})
        stall_seconds = max(6.0, seconds / 2)
        for tool in ("ichaos", "vegeta"):
            print(f"{tool}: 1 s stall at {STALL_RATE}/s ...", file=sys.stderr)
            if tool == "ichaos":
                row = run_ichaos(url, STALL_RATE, stall_seconds, stall=True)
            else:
                row = run_vegeta(vegeta, url, STALL_RATE, stall_seconds, stall=True)
            rows.append({"tool": tool, "test": "stall", **row})

    def at(tool: str, rate: int) -> dict[str, Any]:
        return next(
            r for r in rows if (r["tool"], r["test"], r["target_rate"]) == (tool, "rate", rate)
        )

    def stall(tool: str) -> dict[str, Any]:
        return next(r for r in rows if (r["tool"], r["test"]) == (tool, "stall"))

    ours, theirs = at("ichaos", 2000), at("vegeta", 2000)
    result = {
        "benchmark": "loadgen",
        "peer": f"vegeta {VEGETA_VERSION}",
        "seconds_per_rate": seconds,
        "rate_error_pct_at_2000": ours["rate_error_pct"],
        "lag_p99_ms_at_2000": ours["lag_p99_ms"],
        "p50_ratio_vs_vegeta": ours["latency_p50_ms"] / theirs["latency_p50_ms"],
        "p99_ratio_vs_vegeta": ours["latency_p99_ms"] / theirs["latency_p99_ms"],
        # Like for like: vegeta times from its own send, so this is the client's own overhead.
        "p50_ratio_vs_vegeta_from_send": ours["latency_from_send_p50_ms"]
        / theirs["latency_p50_ms"],
        "p99_ratio_vs_vegeta_from_send": ours["latency_from_send_p99_ms"]
        / theirs["latency_p99_ms"],
        "stall_p99_ratio_vs_vegeta": stall("ichaos")["latency_p99_ms"]
        / stall("vegeta")["latency_p99_ms"],
        "goals": {
            "rate_error_pct_at_2000": 1.0,
            "lag_p99_ms_at_2000": 2.0,
            "latency_ratio_within": 0.10,
        },
        "rows": rows,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Load generator: ichaos vs vegeta {VEGETA_VERSION}",
        "",
        f"Trivial loopback endpoint, {seconds:g} s per rate; stall test: 1 s stall at "
        f"{STALL_RATE}/s over {stall_seconds:g} s. Machine: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}.",
        "",
        "p50/p99: latency as each tool reports it (ichaos: from the scheduled time; vegeta: from "
        "its send). from send: ichaos's latency from its own send, like vegeta's.",
        "",
        "| test | tool | target/s | achieved/s | rate error % | lag p99 ms | p50 ms | p99 ms "
        "| from send p50 / p99 ms | CPU | ok |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        send = (
            f"{r['latency_from_send_p50_ms']:.2f} / {r['latency_from_send_p99_ms']:.2f}"
            if "latency_from_send_p50_ms" in r
            else "same"
        )
        cpu = f"{r['cpu_share']:.0%}" if "cpu_share" in r else "—"
        lines.append(
            f"| {r['test']} | {r['tool']} | {r['target_rate']} | {r['achieved_rate']:.1f} | "
            f"{r['rate_error_pct']:.2f} | {r['lag_p99_ms']:.2f} | {r['latency_p50_ms']:.2f} | "
            f"{r['latency_p99_ms']:.2f} | {send} | {cpu} | {r['ok']}/{r['sent']} |"
        )
    lines += [
        "",
        f"At 2,000/s: rate error {result['rate_error_pct_at_2000']:.2f} % (goal ≤ 1), lag p99 "
        f"{result['lag_p99_ms_at_2000']:.2f} ms (goal ≤ 2), p50 ratio "
        f"{result['p50_ratio_vs_vegeta']:.2f}, p99 ratio {result['p99_ratio_vs_vegeta']:.2f} "
        "(goal within 10 % of vegeta's); from send: p50 ratio "
        f"{result['p50_ratio_vs_vegeta_from_send']:.2f}, p99 ratio "
        f"{result['p99_ratio_vs_vegeta_from_send']:.2f}. Stall test p99 ratio "
        f"{result['stall_p99_ratio_vs_vegeta']:.2f}.",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
