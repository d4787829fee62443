"""Service throughput: the batching worker against the naive one-generate-per-request design.

Same model (primary:v1 from the registry), same machine, same client, one run: each design is
started in turn and driven by closed-loop clients at 1, 4 and 16 concurrency. Tokens per second
count the tokens the servers say they generated; latency is per request, send to full answer.

    .venv/bin/python bench/service_throughput.py [--quick] [--out PATH] [--registry DIR]

Writes JSON (``tokens_per_s`` per design and concurrency, ``speedup_at_16`` = batched / naive) and
a Markdown table beside it; by default bench/results/service_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _common import machine

from chaos import nearest_rank
from target_service import DEFAULT_REGISTRY, Registry, WorkerProcess, build_models

HERE = Path(__file__).resolve().parent
CONCURRENCY = (1, 4, 16)
PROMPTS = (
    "The service answers",
    "Once upon a time",
    "A circuit breaker opens after",
    "In the morning the market",
    "Reliability is a feature",
    "The train left the station",
)


def percentile(values: list[float], q: float) -> float:
    """The harness's own nearest-rank percentile (NaN, not 0, when there is nothing)."""
    return nearest_rank(values, q) if values else float("nan")


async def drive(url: str, concurrency: int, seconds: float, max_new_tokens: int) -> dict[str, Any]:
    """Closed loop: each client sends its next request as soon as the previous one is answered."""
    latencies: list[float] = []
    tokens = 0
    errors = 0
    stop_at = time.monotonic() + seconds

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        n = index
        while time.monotonic() < stop_at:
            body = {"prompt": PROMPTS[n % len(PROMPTS)], "max_new_tokens": max_new_tokens}
            n += 1
            sent = time.monotonic()
            response = await http.post("/v1/generate", json=body)
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.monotonic() - sent)
            tokens += int(response.json()["tokens"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "errors": errors,
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 1),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def measure(server: WorkerProcess, seconds: float, max_new_tokens: int) -> dict[str, Any]:
    # One warm-up pass so neither design pays first-call costs inside a measurement.
    asyncio.run(drive(server.url, 2, min(2.0, seconds), max_new_tokens))
    return {str(c): asyncio.run(drive(server.url, c, seconds, max_new_tokens)) for c in CONCURRENCY}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Service throughput: batching worker vs naive per-request generate",
        "",
        f"Model `{result['model']}`, {result['max_new_tokens']} new tokens per request, "
        f"{result['seconds_per_point']} s per point, {result['machine']['cpus']} CPUs, "
        f"device {result['device']}.",
        "",
        "| design | clients | tokens/s | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for design in ("batched", "naive"):
        for c in CONCURRENCY:
            r = result["designs"][design][str(c)]
            lines.append(
                f"| {design} | {c} | {r['tokens_per_s']} | {r['requests_per_s']} | "
                f"{r['latency_p50_ms']} | {r['latency_p99_ms']} | {r['errors']} |"
            )
    lines += ["", f"**Speedup at 16 clients** (batched ÷ naive tokens/s): "
              f"**{result['speedup_at_16']}×** (goal ≥ 5×)", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short points; finishes within 60 s")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "service_throughput.json")
    parser.add_argument(
        "--registry", type=Path, default=Path(os.environ.get("ICHAOS_REGISTRY", DEFAULT_REGISTRY))
    )
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 15.0

    build_models(Registry(args.registry), ["primary"])  # no-op when intact
    servers = {
        "batched": lambda: WorkerProcess("primary:v1", args.registry, stderr=subprocess.DEVNULL),
        "naive": lambda: WorkerProcess(
            "primary:v1",
            args.registry,
            stderr=subprocess.DEVNULL,
            command=[
                sys.executable,
                str(HERE / "_naive_server.py"),
                "--registry",
                str(args.registry),
            ],
        ),
    }
    designs: dict[str, Any] = {}
    device = "cpu"
    for name, start in servers.items():
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        with start() as server:
            device = server.wait_ready(timeout=180).get("device", device)
            designs[name] = measure(server, seconds, args.max_new_tokens)

    tokens_per_s = {d: {c: v["tokens_per_s"] for c, v in r.items()} for d, r in designs.items()}
    naive16 = tokens_per_s["naive"]["16"]
    result = {
        "benchmark": "service_throughput",
        "model": "primary:v1",
        "device": device,
        "max_new_tokens": args.max_new_tokens,
        "seconds_per_point": seconds,
        "quick": args.quick,
        "machine": machine(),
        "designs": designs,
        "tokens_per_s": tokens_per_s,
        "speedup_at_16": round(tokens_per_s["batched"]["16"] / naive16, 2) if naive16 else None,
        "latency_p50_ms_at_16": {d: r["16"]["latency_p50_ms"] for d, r in designs.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    med = statistics.median([v["tokens_per_s"] for v in designs["batched"].values()])
    return 0 if med > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
