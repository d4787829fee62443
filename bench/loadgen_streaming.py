"""How many streamed chunks per second the load generator sustains within its own validity
limits, in one process and in two Ray shards, with GuideLLM on the same server in the same run.

    .venv/bin/python bench/loadgen_streaming.py [--quick] [--seconds S] [--out PATH]

The server is ``bench/_stream_server.py`` (its own process): every streamed completion is a
fixed number of one-token chunks, a ``usage`` chunk and ``[DONE]``, written at once, so that
what is measured is the client. For 32 and 256 chunks per request, the generator's rate is
raised (×1.4 a step from a low start) until a run is invalid, then bisected twice between the
last valid rate and the first invalid one (one run a rate: a hiccup of the machine's can end a
search early, and the figure is then lower than the generator's limit, never higher); a run is
valid when the generator's own health says so at a lag p99 limit of 10 ms (no request
dropped, schedule lag p99 ≤ 10 ms, its CPU ≤ 90 % of a core; for shards: each shard's) and
every request got its whole stream. The figure of a
run is chunks per second: tokens of the complete answers / (the last answer's end - t = 0).
One process: ``LoadGenerator`` (on uvloop where installed); two shards: ``ShardedLoad`` on a
local Ray cluster started once for the benchmark. GuideLLM (installed on first use into its
own environment, as bench/vs_guidellm.py does) runs its ``throughput`` profile (256 requests
kept in flight, as fast as they come back) on the same server; its figure is the output
tokens/s it reports, with no validity limit (generous to it: a closed-loop tool has no
schedule to keep).

Writes JSON (top-level ``chunks_per_s_one_process``, ``chunks_per_s_two_shards`` and
``guidellm_chunks_per_s``: each the best valid figure at 32 chunks per request) and a Markdown
table; by default bench/results/loadgen_streaming.{json,md}. Goal: one process ≥ 150,000
chunks/s, at least GuideLLM's figure, two shards ≥ 1.8 × one where the cores allow (a 2-core
machine also runs the server: it does not).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import machine, server_process  # noqa: E402
from vs_guidellm import GUIDELLM, guidellm_report, guidellm_venv  # noqa: E402

from chaos import Api, Constant, LoadGenerator, LoadResult, RequestSpec, schedule  # noqa: E402
from chaos._loadgen import frozen_heap, run_loop  # noqa: E402
from chaos._protocols import AnswerRules, request_body  # noqa: E402
from chaos.shards import GeneratorSettings, RayEngine, ShardedLoad  # noqa: E402

CHUNKS = (32, 256)
MAX_LAG_S = 0.010
# An answer takes milliseconds here: past this the generator is far behind (the run is
# invalid anyway), and a short timeout keeps an overloaded run from lasting minutes.
TIMEOUT_S = 5.0
IN_FLIGHT = 2000
# Requests GuideLLM's throughput profile keeps in flight: its best of 64, 256 and 1,024 here.
GUIDELLM_CONCURRENCY = 256
MODEL = "m"
START_CHUNKS_PER_S = 3200.0  # the first rate tried: this many chunks/s
STEP = 1.4


def spec(chunks: int) -> RequestSpec:
    body = request_body(Api.OPENAI_COMPLETIONS, "hi", max_tokens=chunks, model=MODEL,
                        stream=True)  # fmt: skip
    return RequestSpec(body, stream=True, api=Api.OPENAI_COMPLETIONS)


def one_process(url: str, times: list[float], chunks: int) -> LoadResult:
    request = spec(chunks)
    generator = LoadGenerator(url, times, lambda _i: request, timeout_s=TIMEOUT_S,
                              max_lag_p99_s=MAX_LAG_S, max_in_flight=IN_FLIGHT)  # fmt: skip
    with frozen_heap():  # as a run's load is (and each shard's)
        return run_loop(generator.run())


def two_shards(url: str, times: list[float], chunks: int) -> LoadResult:
    request = spec(chunks)
    settings = GeneratorSettings(
        timeout_s=TIMEOUT_S, max_lag_p99_s=MAX_LAG_S, max_cpu_share=0.9, headers={},
        rules=AnswerRules(), max_in_flight=IN_FLIGHT,
    )  # fmt: skip
    load = ShardedLoad(url, times, lambda _i: request, shards=2, engine=RayEngine(None),
                       settings=settings)  # fmt: skip
    return run_loop(load.run())


Runner = Callable[[str, list[float], int], LoadResult]


def trial(run: Runner, url: str, rate: float, seconds: float, chunks: int) -> dict[str, Any]:
    result = run(url, schedule(Constant(rate), seconds), chunks)
    whole = [r for r in result.records
             if r.error is None and r.status == 200 and r.tokens == chunks]  # fmt: skip
    span = max((r.end or 0.0 for r in result.records), default=0.0)
    health = result.health
    shards = [{"cpu_share": round(s.cpu_share, 3), "lag_p99_ms": round(s.lag_p99_ms, 2)}
              for s in health.shards]  # fmt: skip
    out = {
        "rate": round(rate, 1),
        "chunks_per_s": round(sum(r.tokens for r in whole) / span if span else 0.0),
        "valid": health.valid and len(whole) == len(result.records) == health.scheduled,
        "requests": health.scheduled, "complete": len(whole),
        "lag_p99_ms": round(health.lag_p99_ms, 2), "dropped": health.dropped,
        "cpu_share": round(health.cpu_share, 3), "reasons": list(health.reasons),
        "shards": shards,
    }  # fmt: skip
    if len(whole) < len(result.records):
        errors = sorted({str(r.error or r.status) for r in result.records if r not in whole})
        out["reasons"].append(f"{len(result.records) - len(whole)} incomplete: {errors[:3]}")
    state = "valid" if out["valid"] else "INVALID " + "; ".join(out["reasons"])[:120]
    print(
        f"  {rate:9.1f} req/s {out['chunks_per_s']:>9,} chunks/s  lag p99 "
        f"{out['lag_p99_ms']:6.2f} ms  cpu {out['cpu_share']:.0%}  {state}",
        file=sys.stderr,
    )
    return out


def search(run: Runner, url: str, seconds: float, chunks: int, start: float) -> dict[str, Any]:
    """The best valid figure: up by STEP from ``start`` (req/s) until invalid, then two
    bisections between the last valid rate and the first invalid one."""
    trials: list[dict[str, Any]] = []
    rate, good, bad = start, None, None
    while bad is None and rate <= 100_000:
        got = trial(run, url, rate, seconds, chunks)
        trials.append(got)
        if got["valid"]:
            good, rate = rate, rate * STEP
        else:
            bad = rate
    if good is not None and bad is not None:
        for _ in range(2):
            middle = (good + bad) / 2
            got = trial(run, url, middle, seconds, chunks)
            trials.append(got)
            good, bad = (middle, bad) if got["valid"] else (good, middle)
    valid = [t for t in trials if t["valid"]]
    best = max(valid, key=lambda t: t["chunks_per_s"]) if valid else None
    return {"best": best, "trials": trials}


def guidellm(script: Path, url: str, seconds: float, chunks: int) -> dict[str, Any]:
    profile = ["--profile", f"kind=throughput,max_concurrency={GUIDELLM_CONCURRENCY}"]
    log = f"guidellm-streaming-{chunks}.log"
    report = guidellm_report(script, url, profile, seconds, prompt_tokens=8,
                             output_tokens=chunks, log_name=log)  # fmt: skip
    (bench,) = report["benchmarks"]
    metrics = bench["metrics"]
    tokens_per_s = float(metrics["output_tokens_per_second"]["successful"]["mean"])
    totals = metrics["request_totals"]
    print(f"  guidellm throughput: {tokens_per_s:,.0f} chunks/s", file=sys.stderr)
    return {"chunks_per_s": round(tokens_per_s), "successful": totals["successful"],
            "incomplete": totals["incomplete"], "errored": totals["errored"]}  # fmt: skip


def _figure(entry: dict[str, Any]) -> int | None:
    best = entry["best"]
    return None if best is None else int(best["chunks_per_s"])


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# The load generator's streamed throughput: one process, two Ray shards, GuideLLM",
        "",
        f"Server: `bench/_stream_server.py` (its own process), N one-token chunks per answer "
        f"written at once. {result['seconds']:g} s per run; a figure is the best valid run "
        "(lag p99 ≤ 10 ms, nothing dropped, CPU ≤ 90 % of a core per process, every stream "
        f"whole). Machine: {m['cpus']} CPUs, load average {m['load_avg_1m']} (1 min), "
        f"Python {m['python']}. GuideLLM {result['peer']}: its throughput profile, no "
        "validity limit.",
        "",
        "| chunks per request | one process (chunks/s) | two shards (chunks/s) | "
        "GuideLLM (chunks/s) |",
        "|---:|---:|---:|---:|",
    ]
    for chunks in CHUNKS:
        row = result["by_chunks"][str(chunks)]
        cells = [_figure(row["one_process"]), _figure(row["two_shards"]),
                 row["guidellm"]["chunks_per_s"]]  # fmt: skip
        lines.append(f"| {chunks} | " + " | ".join(
            "invalid at every rate" if c is None else f"{c:,}" for c in cells) + " |")  # fmt: skip
    lines += [
        "",
        "Every run, with why it was invalid where it was, is in the JSON (`trials`).",
        "",
        f"Two shards / one process at 32 chunks: {result['two_shards_over_one']}. On this "
        "machine the server and the generator processes share its CPUs, so two shards cannot "
        "double one where there are fewer than three cores.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 s per run instead of 8 s")
    parser.add_argument("--seconds", type=float, help="seconds per run (overrides --quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loadgen_streaming.json")
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 8.0)
    script = guidellm_venv()
    import logging

    import ray

    # One local cluster for every two-shard run (each run's engine joins it, and leaves it).
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 1024**2,
             log_to_driver=False, logging_level=logging.ERROR)  # fmt: skip
    by_chunks: dict[str, Any] = {}
    try:
        for chunks in CHUNKS:
            with server_process(HERE / "_stream_server.py", f"--chunks={chunks}") as url:
                start = START_CHUNKS_PER_S / chunks
                print(f"{chunks} chunks per request, one process:", file=sys.stderr)
                one = search(one_process, url, seconds, chunks, start)
                print(f"{chunks} chunks per request, two shards:", file=sys.stderr)
                best = one["best"]["rate"] if one["best"] else start
                two = search(two_shards, url, seconds, chunks, max(start, best * 0.7))
                print(f"{chunks} chunks per request, GuideLLM:", file=sys.stderr)
                peer = guidellm(script, url, seconds, chunks)
            by_chunks[str(chunks)] = {"one_process": one, "two_shards": two, "guidellm": peer}
    finally:
        ray.shutdown()
    row = by_chunks["32"]
    one_figure, two_figure = _figure(row["one_process"]), _figure(row["two_shards"])
    result = {
        "benchmark": "loadgen_streaming", "peer": GUIDELLM, "seconds": seconds,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
        "chunks_per_s_one_process": one_figure, "chunks_per_s_two_shards": two_figure,
        "guidellm_chunks_per_s": row["guidellm"]["chunks_per_s"],
        "two_shards_over_one": round(two_figure / one_figure, 2)
        if one_figure and two_figure else None,
        "by_chunks": by_chunks,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
