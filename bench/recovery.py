"""Recovery times of the reference stack, median over several trials, measured from the fault:

(a) SIGKILL of a primary worker → the replica is ready and back in the gateway's rotation;
(b) every primary worker killed → the first degraded (fallback) answer a client receives;
(c) the canary failing every request under 20 requests/s → the gateway's rollback event.

    .venv/bin/python bench/recovery.py [--quick] [--trials N] [--out PATH]

Runs the shipped stack file (canary weight 5 %, deadline 2 s, canary controller defaults). Each
trial starts from a stack at rest: every replica ready and the supervisor's standby worker warm;
kills alternate between the two primary replicas and wait until the victim has run for the
restart policy's ``reset_after``, so no trial measures the crash-loop backoff.
Writes JSON (top-level medians ``kill_to_ready_s``, ``all_down_to_degraded_s``,
``canary_rollback_s``) and a Markdown table; by default bench/results/recovery.{json,md}.
Goals: (a) ≤ 3 s, (b) ≤ one deadline, (c) ≤ 15 s. For scale: Flagger's documented example
rolls back after interval × threshold = 10 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _common import machine

from chaos.injectors import process_cmdline
from target_service import (
    DEFAULT_REGISTRY,
    Registry,
    StackProcess,
    build_models,
    default_stack_file,
    load_stack_config,
)

HERE = Path(__file__).resolve().parent
TOKEN = "bench-recovery-token"
AUTH = {"X-Admin-Token": TOKEN}
RATE = 20.0
LIMIT_S = 60.0


def wait(predicate: Callable[[], Any], what: str, timeout: float = LIMIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"{what}: not within {timeout}s")


class Bench:
    def __init__(self, stack: StackProcess, reset_after: float) -> None:
        self.stack = stack
        self.http = httpx.Client(base_url=stack.url, timeout=30)
        # A worker killed again before it has run ``reset_after`` is crash-looping and gets a
        # doubled backoff, by design; trials alternate replicas and let each one run that long.
        self.reset_after = reset_after
        self.up_since = {0: time.monotonic(), 1: time.monotonic()}
        self.trial = 0

    def admin_state(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/admin/state", headers=AUTH).json()
        return data

    def events(self, since: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.http.get(
            "/admin/events", params={"since": since}, headers=AUTH
        ).json()["events"]
        return found

    def last_seq(self) -> int:
        return int(self.http.get("/admin/events", headers=AUTH).json()["last_seq"])

    def replica(self, pool: str, index: int) -> dict[str, Any]:
        replicas: list[dict[str, Any]] = self.admin_state()["pools"][pool]["replicas"]
        return replicas[index]

    def all_ready(self) -> bool:
        pools = self.admin_state()["pools"]
        return all(r["ready"] for p in pools.values() for r in p["replicas"])

    def standby_warm(self) -> bool:
        standby = self.stack.state().get("standby")
        return bool(standby and standby["status"] == "standby")

    def settle(self) -> None:
        """The stack at rest: every replica ready, the standby warm, breakers closed."""
        wait(self.all_ready, "all replicas ready", timeout=120)
        wait(self.standby_warm, "standby worker warm", timeout=120)
        for _ in range(5):
            self.http.post("/v1/generate", json={"prompt": "warm", "max_new_tokens": 1})

    # (a) -------------------------------------------------------------------------------------
    def kill_to_ready(self) -> float:
        index = self.trial % 2
        self.trial += 1
        self.settle()
        self.rested((index,))
        (pid,) = self.live_pids((index,))
        since = self.last_seq()
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)

        def seen(kind: str) -> bool:
            return any(e["kind"] == kind and e.get("pool") == "primary" for e in self.events(since))

        wait(lambda: seen("worker_restarted"), "restart")
        wait(lambda: self.replica("primary", index)["ready"] and seen("replica_up"), "in rotation")
        self.up_since[index] = time.monotonic()
        return self.up_since[index] - killed

    def rested(self, indexes: tuple[int, ...]) -> None:
        """Wait until each replica has run ``reset_after`` since it last came back: one killed
        sooner is crash-looping by the supervisor's rules and waits a doubled backoff, which
        would measure the backoff policy instead of the recovery."""
        rest = max(self.up_since[i] for i in indexes) + self.reset_after + 0.5 - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def live_pids(self, indexes: tuple[int, ...]) -> list[int]:
        """The primaries' pids as the supervisor's state has them, once each is a live worker
        (the state is rewritten after a restart, so a pid read early may be the dead one's)."""

        def live() -> list[int] | None:
            pids = [int(self.stack.worker("primary", i)["pid"]) for i in indexes]
            return (
                pids if all("target_service worker" in process_cmdline(p) for p in pids) else None
            )

        found: list[int] = wait(live, "live primary workers in the state file")
        return found

    # (b) -------------------------------------------------------------------------------------
    def all_down_to_degraded(self) -> float:
        self.settle()
        self.rested((0, 1))
        pids = self.live_pids((0, 1))
        first: list[float] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(base_url=self.stack.url, timeout=30) as http:
                next_at = time.monotonic()
                while not stop.is_set() and not first:
                    body = http.post("/v1/generate", json={"prompt": "Hi", "max_new_tokens": 2})
                    if body.status_code == 200 and body.json().get("degraded"):
                        first.append(time.monotonic())
                    next_at += 1 / RATE
                    stop.wait(max(0.0, next_at - time.monotonic()))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # traffic is flowing before the fault, as in production
        killed = time.monotonic()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it died by itself just now: down
                os.kill(pid, signal.SIGKILL)
        try:
            wait(lambda: first, "first degraded answer")
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.settle()  # both back before the next trial; their rest counts from now
        self.up_since = {0: time.monotonic(), 1: time.monotonic()}
        return min(first) - killed

    # (c) -------------------------------------------------------------------------------------
    def canary_rollback(self) -> float:
        self.settle()
        weight = 5.0
        self.http.post("/admin/canary/weight", json={"weight": weight}, headers=AUTH)
        canary = self.stack.worker("canary", 0)["url"]
        since = self.last_seq()
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=self.stack.url, timeout=30) as http:
                n = 0
                next_at = time.monotonic()
                while not stop.is_set():
                    http.post(
                        "/v1/generate", json={"prompt": "Hi", "max_new_tokens": 2, "user": f"u{n}"}
                    )
                    n += 1
                    next_at += 1 / RATE
                    stop.wait(max(0.0, next_at - time.monotonic()))

        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(1.0)
            faulted = time.monotonic()
            httpx.post(f"{canary}/admin/faults/oom", json={"count": 1_000_000}, headers=AUTH)
            rollback = wait(
                lambda: [e for e in self.events(since) if e["kind"] == "canary_rollback"],
                "rollback",
            )
        finally:
            stop.set()
            thread.join()
            httpx.delete(f"{canary}/admin/faults/all", headers=AUTH)
        # The event's monotonic clock is the gateway's, the same host clock as ours.
        return float(rollback[0]["monotonic"]) - faulted


def median_of(trials: int, run: Callable[[], float], name: str) -> dict[str, Any]:
    values = []
    for i in range(trials):
        value = run()
        print(f"  {name} trial {i + 1}/{trials}: {value:.3f}s", file=sys.stderr, flush=True)
        values.append(round(value, 4))
    return {"median_s": round(statistics.median(values), 4), "trials_s": values}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the minimum of 5 trials each")
    parser.add_argument("--trials", type=int, default=None, help="trials per measurement (≥ 5)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recovery.json")
    registry = Path(os.environ.get("ICHAOS_REGISTRY", DEFAULT_REGISTRY))
    parser.add_argument("--registry", type=Path, default=registry)
    args = parser.parse_args()
    trials = max(5, args.trials or (5 if args.quick else 7))
    build_models(Registry(args.registry))
    shipped = load_stack_config(default_stack_file())
    deadline = shipped.gateway.deadline

    with tempfile.TemporaryDirectory(prefix="ichaos-recovery-") as tmp:
        log = Path(tmp) / "stack.log"
        env = {"ICHAOS_ADMIN_TOKEN": TOKEN}
        state = Path(tmp) / "state.json"
        with (
            log.open("w") as stderr,
            StackProcess(None, state, args.registry, env=env, stderr=stderr) as stack,
        ):
            bench = Bench(stack, shipped.restart.reset_after)
            results = {
                "kill_to_ready": median_of(trials, bench.kill_to_ready, "kill → ready"),
                "all_down_to_degraded": median_of(
                    trials, bench.all_down_to_degraded, "all down → degraded"
                ),
                "canary_rollback": median_of(trials, bench.canary_rollback, "canary → rollback"),
            }
    result = {
        "benchmark": "recovery",
        "trials": trials,
        "rate_per_s": RATE,
        "deadline_s": deadline,
        "machine": machine(),
        "kill_to_ready_s": results["kill_to_ready"]["median_s"],
        "all_down_to_degraded_s": results["all_down_to_degraded"]["median_s"],
        "canary_rollback_s": results["canary_rollback"]["median_s"],
        "details": results,
        "goals": {
            "kill_to_ready_s": 3.0,
            "all_down_to_degraded_s": deadline,
            "canary_rollback_s": 15.0,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    one_deadline = f"≤ {deadline:g} s (one deadline)"
    rows = [
        ("(a) SIGKILL primary worker → ready, in rotation", "kill_to_ready_s", "≤ 3 s"),
        ("(b) all primary down → first degraded answer", "all_down_to_degraded_s", one_deadline),
        ("(c) failing canary at 20 req/s → rollback", "canary_rollback_s", "≤ 15 s"),
    ]
    lines = [
        "# Recovery of the reference stack",
        "",
        f"Median of {trials} trials each, measured from the fault; {os.cpu_count()} CPUs.",
        "",
        "| measurement | median | trials | goal |",
        "|---|---:|---|---|",
    ]
    for label, key, goal in rows:
        detail = results[key.removesuffix("_s")]
        trials_text = ", ".join(f"{v:.2f}" for v in detail["trials_s"])
        lines.append(f"| {label} | {result[key]:.2f} s | {trials_text} | {goal} |")
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
