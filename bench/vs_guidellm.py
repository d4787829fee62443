"""ichaos's load generator side by side with GuideLLM, against one OpenAI-compatible server.

    .venv/bin/python bench/vs_guidellm.py [--quick] [--seconds S] [--out PATH]

The server is ``bench/_openai_server.py`` (its own process), whose timing is known: each
streamed completion's first token 80 ms after the request arrived, then one token every 20 ms,
32 tokens, a ``usage`` chunk and ``[DONE]``. At 2, 5 and 10 requests/s (20 s each; ``--quick``:
8 s), ichaos's open-loop generator streams ``/v1/completions`` (``max_tokens: 32``), then
GuideLLM does the same at the same rates (one ``guidellm run`` over the three rates, synthetic
16-token prompts, the built ``primary:v1`` tokenizer as its processor, offline). GuideLLM is
installed on first use into its own environment, ``.ichaos/bench/guidellm`` (it pins click and
datasets versions of its own); the project's torch is shared with it through a ``.pth`` file
rather than downloaded a second time.

Figures, per tool and rate, each computed the way GuideLLM defines it so that both measure the
same thing:

- TTFT p50/p99: first token - start. GuideLLM starts the clock when its HTTP client starts
  sending the headers; ichaos's own figures start at the request's *scheduled* send time (so a
  late send counts against the service: no coordinated omission). Both are written: ichaos
  timed from its send (like for like, the compared figure) and from the schedule; they differ
  by ichaos's schedule lag (reported beside them).
- ITL p50/p99: per request, (last token - first token) / (tokens - 1), the mean gap, which
  ichaos calls time per output token (TPOT); GuideLLM weights each request by its tokens - 1,
  equal here (every answer has 32 tokens).
- End-to-end p50/p99: start to the end of the stream.
- Output tokens/s: tokens of the successful requests / (last end - first start), computed from
  each tool's own per-request records (GuideLLM's JSON holds them); GuideLLM's own reported
  figure (the mean of its time-weighted throughput distribution, over its benchmark window,
  which cancels the requests still in flight when its duration is up) is written beside it.

Writes JSON (top-level ``max_abs_diff_pct``: the largest difference between the two tools, in
percent of GuideLLM's figure, over every figure and rate, ichaos timed from its send as GuideLLM
times; ``max_abs_diff_pct_from_schedule``: the same with ichaos's own clock) and a Markdown table;
by default bench/results/vs_guidellm.{json,md}. Goal: within 5 % where both measure the same
thing; every larger difference is explained in the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from _common import machine, percentile, server_process  # noqa: E402

from chaos import Api, Constant, LoadGenerator, RequestSpec, schedule  # noqa: E402
from chaos._protocols import request_body  # noqa: E402

GUIDELLM = "guidellm==0.8.1"
RATES = (2.0, 5.0, 10.0)
TTFT_MS, ITL_MS, TOKENS, PROMPT_TOKENS = 80.0, 20.0, 32, 16
MODEL = "m"
PROMPT = "Tell me about the weather in Lisbon in late autumn, please."
FIGURES = ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms",
           "e2e_p99_ms", "output_tokens_per_s")  # fmt: skip


def guidellm_venv() -> Path:
    """GuideLLM in its own environment, made on first use; returns its ``guidellm`` script."""
    venv = Path(os.environ.get("ICHAOS_GUIDELLM_VENV", ROOT / ".ichaos" / "bench" / "guidellm"))
    script, stamp = venv / "bin" / "guidellm", venv / ".installed"
    if script.is_file() and stamp.is_file() and stamp.read_text().strip() == GUIDELLM:
        return script
    print(f"installing {GUIDELLM} into {venv} (once) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Last on its path: what GuideLLM installs for itself wins; torch (gigabytes) is ours.
    (Path(site) / "zz-ichaos-shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    log = venv / "pip-install.log"
    with log.open("w") as out:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", GUIDELLM],
            check=False, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"error: installing {GUIDELLM} failed; see {log}")
    stamp.write_text(GUIDELLM + "\n")
    return script


def openai_server() -> AbstractContextManager[str]:
    return server_process(HERE / "_openai_server.py", f"--ttft-ms={TTFT_MS:g}",
                          f"--itl-ms={ITL_MS:g}", f"--tokens={TOKENS}")  # fmt: skip


def figures(requests: list[dict[str, float]]) -> dict[str, float]:
    """The figures of one tool at one rate, from per-request ``start``, ``first``, ``last``,
    ``end`` (seconds) and ``tokens`` of its successful requests."""
    ttft = [(r["first"] - r["start"]) * 1000 for r in requests]
    itl = [(r["last"] - r["first"]) / (r["tokens"] - 1) * 1000 for r in requests if r["tokens"] > 1]
    e2e = [(r["end"] - r["start"]) * 1000 for r in requests]
    span = max(r["end"] for r in requests) - min(r["start"] for r in requests)
    return {
        "requests": len(requests),
        "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
        "itl_p50_ms": percentile(itl, 50), "itl_p99_ms": percentile(itl, 99),
        "e2e_p50_ms": percentile(e2e, 50), "e2e_p99_ms": percentile(e2e, 99),
        "output_tokens_per_s": sum(r["tokens"] for r in requests) / span,
        # The three slowest of each, so that a p99 set by one request shows as such.
        "slowest_ms": {"ttft": sorted(ttft)[-3:], "itl": sorted(itl)[-3:],
                       "e2e": sorted(e2e)[-3:]},
    }  # fmt: skip


def run_ichaos(url: str, rate: float, seconds: float) -> dict[str, Any]:
    body = request_body(Api.OPENAI_COMPLETIONS, PROMPT, max_tokens=TOKENS, model=MODEL,
                        stream=True)  # fmt: skip
    generator = LoadGenerator(
        url, schedule(Constant(rate), seconds),
        lambda _i: RequestSpec(body, stream=True, api=Api.OPENAI_COMPLETIONS), timeout_s=30,
    )  # fmt: skip
    result = asyncio.run(generator.run())
    good = [r for r in result.records if r.error is None and r.status == 200]
    timed = [
        r
        for r in good
        if r.first_token is not None and r.last_token is not None and r.end is not None
    ]

    def requests(start: str) -> list[dict[str, float]]:
        return [
            {
                "start": getattr(r, start),
                "first": r.first_token,
                "last": r.last_token,
                "end": r.end,
                "tokens": r.tokens,
            }
            for r in timed
        ]  # type: ignore[misc]

    gaps = [g * 1000 for r in good for g in r.gaps]
    lags = [(r.sent - r.scheduled) * 1000 for r in result.records]
    return {
        # As GuideLLM times them: from the send. ichaos's own figures start at the schedule.
        **figures(requests("sent")),
        "from_schedule": figures(requests("scheduled")),
        "failed": len(result.records) - len(timed),
        "gap_p50_ms": percentile(gaps, 50), "gap_p99_ms": percentile(gaps, 99),
        "schedule_lag_p99_ms": percentile(lags, 99), "valid": result.health.valid,
        "cpu_share": result.health.cpu_share, "load_avg_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def guidellm_report(
    script: Path, url: str, profile: list[str], seconds: float, *, prompt_tokens: int,
    output_tokens: int, log_name: str,
) -> dict[str, Any]:  # fmt: skip
    """One ``guidellm run`` against ``url``'s /v1/completions with ``profile``'s arguments,
    synthetic prompts, the built ``primary:v1`` tokenizer, offline; its JSON report."""
    tokenizer = Path(os.environ.get("ICHAOS_REGISTRY", ROOT / ".ichaos" / "registry"))
    tokenizer = tokenizer / "primary" / "v1"
    if not (tokenizer / "tokenizer.json").is_file():
        sys.exit(f"error: no built tokenizer at {tokenizer}: run ./dev setup first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "guidellm.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
        data = f"kind=synthetic_text,prompt_tokens={prompt_tokens},output_tokens={output_tokens}"
        cmd = [
            str(script), "run",
            "--backend", f"kind=openai_http,target={url},model={MODEL},"
            "request_format=/v1/completions",
            *profile,
            "--constraint", f"kind=max_duration,seconds={seconds:g}",
            "--data", data,
            "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
            "--output", f"kind=json,path={out}",
            "--disable-console-interactive",
        ]  # fmt: skip
        log = ROOT / ".ichaos" / "bench" / log_name
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as sink:
            done = subprocess.run(
                cmd, check=False, env=env, cwd=tmp, stdout=sink, stderr=subprocess.STDOUT
            )
        if done.returncode != 0 or not out.is_file():
            sys.exit(f"error: guidellm failed (exit {done.returncode}); see {log}")
        report: dict[str, Any] = json.loads(out.read_text())
    return report


def run_guidellm(script: Path, url: str, seconds: float) -> dict[float, dict[str, Any]]:
    rates = ",".join(f"{r:g}" for r in RATES)
    profile = ["--profile", f"kind=constant,rate={RATES[0]:g}", "--override", "profile.rate", rates]
    report = guidellm_report(script, url, profile, seconds, prompt_tokens=PROMPT_TOKENS,
                             output_tokens=TOKENS, log_name="guidellm-run.log")  # fmt: skip
    found: dict[float, dict[str, Any]] = {}
    for bench in report["benchmarks"]:
        rate = float(bench["config"]["strategy"]["rate"])
        metrics = bench["metrics"]
        requests = []
        for r in bench["requests"]["successful"]:
            t = r["info"]["timings"]
            tokens = r.get("output_tokens") or 0
            if t.get("first_token_iteration") is None or t.get("request_end") is None:
                continue
            requests.append({"start": t["request_start"], "first": t["first_token_iteration"],
                             "last": t["last_token_iteration"], "end": t["request_end"],
                             "tokens": tokens})  # fmt: skip

        def stat(name: str, key: str, scale: float = 1.0, metrics: Any = metrics) -> float:
            dist = metrics[name]["successful"]
            value = dist["median"] if key == "p50" else dist["percentiles"][key]
            return float(value) * scale

        found[rate] = {
            **figures(requests),
            "reported": {
                "ttft_p50_ms": stat("time_to_first_token_ms", "p50"),
                "ttft_p99_ms": stat("time_to_first_token_ms", "p99"),
                "itl_p50_ms": stat("inter_token_latency_ms", "p50"),
                "itl_p99_ms": stat("inter_token_latency_ms", "p99"),
                "e2e_p50_ms": stat("request_latency", "p50", 1000),
                "e2e_p99_ms": stat("request_latency", "p99", 1000),
                "output_tokens_per_s": float(
                    metrics["output_tokens_per_second"]["successful"]["mean"]
                ),
            },
            "incomplete": metrics["request_totals"]["incomplete"],
            "errored": metrics["request_totals"]["errored"],
            "dispatch_delay_p99_ms": stat("request_dispatch_delay", "p99", 1000),
        }
    return found


def diff_percentile(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / theirs * 100 if theirs else float("inf")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# ichaos vs {result['peer']}: streamed completions, one server",
        "",
        f"Server: `bench/_openai_server.py`, first token {TTFT_MS:g} ms after arrival, then a "
        f"token every {ITL_MS:g} ms, {TOKENS} tokens (true end-to-end "
        f"{TTFT_MS + (TOKENS - 1) * ITL_MS:g} ms). {result['seconds_per_rate']:g} s per rate. "
        f"Machine: {m['cpus']} CPUs, load average {m['load_avg_1m']} (1 min) at the end, "
        f"Python {m['python']}.",
        "",
        f"**Largest difference, like for like: {result['max_abs_diff_pct']:.1f} %** "
        f"({result['max_abs_diff_at']}); goal ≤ 5 %. With ichaos's own clock, from the "
        f"scheduled send: {result['max_abs_diff_pct_from_schedule']:.1f} % "
        f"({result['max_abs_diff_from_schedule_at']}).",
        "",
        "| rate | figure | ichaos (from its send) | GuideLLM | diff | ichaos (from the schedule) "
        "| GuideLLM's own report |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rates"]:
        ours, theirs = row["ichaos"], row["guidellm"]
        for name in FIGURES:
            lines.append(
                f"| {row['rate']:g}/s | {name} | {ours[name]:.2f} | {theirs[name]:.2f} | "
                f"{row['diff_pct'][name]:.1f} % | {ours['from_schedule'][name]:.2f} | "
                f"{theirs['reported'][name]:.2f} |"
            )
    lines += ["", "Per rate:", ""]
    for row in result["rates"]:
        ours, theirs = row["ichaos"], row["guidellm"]
        lines.append(
            f"- {row['rate']:g}/s: ichaos {ours['requests']} answered, {ours['failed']} failed, "
            f"schedule lag p99 {ours['schedule_lag_p99_ms']:.2f} ms, every gap p50/p99 "
            f"{ours['gap_p50_ms']:.2f}/{ours['gap_p99_ms']:.2f} ms, CPU "
            f"{ours['cpu_share']:.0%} of a core, valid: {ours['valid']}; GuideLLM "
            f"{theirs['requests']} answered, {theirs['incomplete']} cut at its duration, "
            f"{theirs['errored']} errored, dispatch delay p99 "
            f"{theirs['dispatch_delay_p99_ms']:.2f} ms."
        )
    lines += ["", "## Why the figures differ where they do", "", *result["explanations"], ""]
    return "\n".join(lines)


def explain(rows: list[dict[str, Any]]) -> list[str]:
    """The definitions that differ, and for every difference over 5 % what the run itself
    shows about it."""
    out = [
        "- *From the schedule or from the send*: ichaos's own TTFT and end-to-end count from "
        "the scheduled send (a late send counts against the service: no coordinated "
        "omission); GuideLLM counts from when its client starts writing the headers. The "
        "like-for-like column times ichaos from its send too; the two ichaos columns differ "
        "by its schedule lag.",
        "- *GuideLLM's own output tokens/s* is the mean of its time-weighted throughput over "
        "its benchmark window, which ends when its duration is up and drops the requests then "
        "in flight (counted as cut); the compared figure divides the tokens of the answered "
        "requests by the span from the first start to the last end, for both tools.",
    ]
    for row in rows:
        ours, theirs = row["ichaos"], row["guidellm"]
        for name, value in row["diff_pct"].items():
            if value <= 5:
                continue
            delta = ours[name] - theirs[name]
            facts = [f"{row['rate']:g}/s {name}: ichaos {ours[name]:.2f}, GuideLLM "
                     f"{theirs[name]:.2f} ({value:.1f} %, {delta:+.2f})"]  # fmt: skip
            if name.endswith("p99_ms"):
                kind = name.split("_")[0]
                slow = ", ".join(f"{v:.1f}" for v in ours["slowest_ms"][kind])
                peer = ", ".join(f"{v:.1f}" for v in theirs["slowest_ms"][kind])
                facts.append(
                    f"a p99 of {ours['requests']} and {theirs['requests']} requests is their "
                    f"slowest one or two (ichaos's three slowest: {slow} ms; GuideLLM's: "
                    f"{peer} ms); ichaos's schedule lag p99 was "
                    f"{ours['schedule_lag_p99_ms']:.2f} ms and GuideLLM's dispatch delay p99 "
                    f"{theirs['dispatch_delay_p99_ms']:.2f} ms on a machine at load "
                    f"{row['load_avg_1m']}"
                )
            out.append("- " + "; ".join(facts) + ".")
    return out


def worst(rows: list[dict[str, Any]], key: str) -> tuple[float, str]:
    return max((r[key][n], f"{n} at {r['rate']:g}/s") for r in rows for n in FIGURES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s per rate instead of 20 s")
    parser.add_argument("--seconds", type=float, help="seconds per rate (overrides --quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "vs_guidellm.json")
    args = parser.parse_args()
    seconds = args.seconds or (8.0 if args.quick else 20.0)
    script = guidellm_venv()
    version = subprocess.run([str(script), "--version"], check=False, capture_output=True,
                             text=True)  # fmt: skip
    with openai_server() as url:
        run_ichaos(url, 5, 1.0)  # warm-up: imports, the first connections
        ours = {}
        for rate in RATES:
            print(f"ichaos at {rate:g}/s for {seconds:g}s ...", file=sys.stderr)
            ours[rate] = run_ichaos(url, rate, seconds)
        print(f"GuideLLM at {', '.join(f'{r:g}/s' for r in RATES)} ...", file=sys.stderr)
        theirs = run_guidellm(script, url, seconds)
    rows = []
    for rate in RATES:
        if rate not in theirs:
            sys.exit(f"error: GuideLLM's report has no benchmark at {rate:g}/s")
        ichaos, peer = ours[rate], theirs[rate]
        rows.append({
            "rate": rate, "ichaos": ichaos, "guidellm": peer,
            "diff_pct": {n: diff_percentile(ichaos[n], peer[n]) for n in FIGURES},
            "diff_pct_from_schedule": {
                n: diff_percentile(ichaos["from_schedule"][n], peer[n]) for n in FIGURES
            },
            "load_avg_1m": ichaos["load_avg_1m"],
        })  # fmt: skip
    like, own = worst(rows, "diff_pct"), worst(rows, "diff_pct_from_schedule")
    result = {
        "benchmark": "vs_guidellm",
        "peer": f"GuideLLM {(version.stdout or GUIDELLM).strip().split()[-1]}",
        "seconds_per_rate": seconds,
        "max_abs_diff_pct": like[0],
        "max_abs_diff_at": like[1],
        "max_abs_diff_pct_from_schedule": own[0],
        "max_abs_diff_from_schedule_at": own[1],
        "goal_max_abs_diff_pct": 5.0,
        "server": {"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "tokens": TOKENS},
        "rates": rows,
        "explanations": explain(rows),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
