"""The whole reference stack as real processes: supervisor, gateway, workers.

One stack serves the module (starting one costs ~20 s); each test starts from a healthy stack:
every replica ready, every breaker closed, no fault hook set, the canary weight back at 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaos import wait_until
from target_service import StackProcess
from tests.conftest import ADMIN_TOKEN, needs_service

pytestmark = [pytest.mark.slow, needs_service]

AUTH = {"X-Admin-Token": ADMIN_TOKEN}

STACK = """
pools:
  primary: {model: primary:v1, replicas: 2, max_in_flight: 6}
  canary: {model: canary:v2, replicas: 1, weight: 0, max_in_flight: 64}
  fallback: {model: fallback:v1, replicas: 1, max_in_flight: 64}
gateway:
  deadline: 1s
  breaker: {failures: 3, cooldown: 1s}
  health_interval: 200ms
  canary: {window: 10s, min_requests: 10, burn_rate_threshold: 10, evaluate_every: 200ms}
restart: {initial_backoff: 100ms, max_backoff: 2s}
"""


class Stack(StackProcess):
    """The running stack, with the admin calls the tests need."""

    def __init__(self, tmp: Path, registry: Path, config: str = STACK) -> None:
        path = tmp / "stack.yaml"
        path.write_text(config)
        self.log = (tmp / "supervisor.log").open("w")
        super().__init__(
            path, tmp / "state" / "state.json", registry,
            env={"ICHAOS_ADMIN_TOKEN": ADMIN_TOKEN}, stderr=self.log, timeout=240,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def admin(self) -> dict[str, Any]:
        data: dict[str, Any] = self.http.get("/admin/state", headers=AUTH).json()
        return data

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        answer = self.http.get("/admin/events", params={"since": since}, headers=AUTH).json()
        events: list[dict[str, Any]] = answer["events"]
        return events

    def last_seq(self) -> int:
        return int(self.http.get("/admin/events", headers=AUTH).json()["last_seq"])

    def healthy(self) -> bool:
        # The canary's breaker is left out: at weight 0 no request could close it again.
        replicas = [r for p in self.admin()["pools"].values() for r in p["replicas"]]
        return all(r["ready"] and (r["breaker"] == "closed" or r["pool"] == "canary")
                   for r in replicas)  # fmt: skip

    def settled(self) -> bool:
        """Healthy; if not yet, send one request: a breaker closes only on a successful trial."""
        if self.healthy():
            return True
        self.http.post("/v1/generate", json={"prompt": "warm", "max_new_tokens": 1})
        return False

    def fault(self, pool: str, index: int, kind: str, **params: Any) -> None:
        url = self.worker(pool, index)["url"]
        httpx.post(f"{url}/admin/faults/{kind}", json=params, headers=AUTH).raise_for_status()

    def clear_faults(self) -> None:
        for worker in self.state()["workers"]:
            # A worker being restarted has no faults to clear.
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{worker['url']}/admin/faults/all", headers=AUTH, timeout=5)

    def stop(self, timeout: float = 20.0) -> int:
        self.http.close()
        code = super().stop(timeout)
        self.log.close()
        return code


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, built_registry: Path) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"), built_registry)
    yield running
    running.stop()


@pytest.fixture
def gw(stack: Stack) -> Iterator[Stack]:
    wait_until(stack.settled, timeout=90, message="every replica ready with a closed breaker")
    yield stack
    stack.clear_faults()
    stack.http.post("/admin/canary/weight", json={"weight": 0}, headers=AUTH)


def generate(http: httpx.Client, user: str | None = None, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"prompt": "Hello there", "max_new_tokens": 2, **body}
    if user is not None:
        payload["user"] = user
    return http.post("/v1/generate", json=payload)


def kinds(events: list[dict[str, Any]], pool: str | None = None) -> list[str]:
    return [e["kind"] for e in events if pool is None or e.get("pool") == pool]


def test_responses_say_which_model_served_them(gw: Stack) -> None:
    data = generate(gw.http).json()
    assert (data["model"], data["version"], data["degraded"], data["pool"]) == (
        "primary", "v1", False, "primary",
    )  # fmt: skip
    completion = gw.http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3})
    body = completion.json()
    assert completion.status_code == 200
    assert body["object"] == "text_completion"
    assert body["model"] == "primary:v1"
    assert body["choices"][0]["finish_reason"] in {"length", "stop"}
    assert completion.headers["X-Ichaos-Degraded"] == "false"


def test_streams_relay_tokens_and_end_with_a_summary(gw: Stack) -> None:
    body = {"prompt": "Once upon a time", "max_new_tokens": 4, "stream": True}
    with gw.http.stream("POST", "/v1/generate", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    done = json.loads(lines[-1].removeprefix("data:"))
    assert done["degraded"] is False and done["model"] == "primary"
    with gw.http.stream(
        "POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 3, "stream": True}
    ) as response:
        chunks = [line for line in response.iter_lines() if line.startswith("data:")]
    assert chunks[-1] == "data: [DONE]"
    assert json.loads(chunks[0].removeprefix("data:"))["object"] == "text_completion"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/generate", {"prompt": ""}, 422),
        ("/v1/generate", {"prompt": "hi", "max_new_tokens": 999}, 422),
        ("/v1/generate", {"prompt": "hi", "user": ""}, 422),
        ("/v1/completions", {"prompt": "hi", "temperature": 0.5}, 422),
        ("/v1/completions", {"prompt": "hi", "max_tokens": "3"}, 422),
    ],
)
def test_bad_requests_get_4xx_json_errors(
    gw: Stack, path: str, body: dict[str, Any], status: int
) -> None:
    response = gw.http.post(path, json=body)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request"
    broken = gw.http.post(path, content=b"{nope", headers={"content-type": "application/json"})
    assert broken.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/state"),
        ("GET", "/admin/events"),
        ("POST", "/admin/canary/promote"),
        ("POST", "/admin/canary/rollback"),
        ("POST", "/admin/replicas/primary/0/reload"),
    ],
)
def test_admin_endpoints_refuse_a_missing_or_wrong_token(gw: Stack, method: str, path: str) -> None:
    assert gw.http.request(method, path).status_code == 401
    assert gw.http.request(method, path, headers={"X-Admin-Token": "nope"}).status_code == 403
    assert gw.admin()["canary_weight"] == 0


def test_sigkill_of_a_primary_worker_under_load_is_routed_around_and_restarted(gw: Stack) -> None:
    since = gw.last_seq()
    victim = gw.worker("primary", 0)
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            for _ in range(2000):  # bounded; the test stops it much earlier
                if stop.is_set():
                    return
                statuses[generate(http).status_code] += 1

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        wait_until(lambda: sum(statuses.values()) >= 20, timeout=30, message="load running")
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(
            lambda: "worker_restarted" in kinds(gw.events(since), "primary"),
            timeout=30,
            message="supervisor restarted the killed worker",
        )
        wait_until(
            lambda: kinds(gw.events(since), "primary").count("replica_up") >= 1,
            timeout=60,
            message="the restarted worker is back in rotation",
        )
        stop.set()
        for future in futures:
            future.result()
    # At most the four requests in flight on the killed worker could fail; here the gateway
    # retried them on the other replica or the fallback, so none did.
    assert statuses[200] >= 20
    assert sum(n for status, n in statuses.items() if status != 200) <= 4
    events = gw.events(since)
    lifecycle = {"replica_down", "worker_exited", "worker_restarted", "replica_up"}
    order = [k for k in kinds(events, "primary") if k in lifecycle]
    assert order.index("worker_restarted") < len(order) - 1 - order[::-1].index("replica_up")
    assert gw.worker("primary", 0)["restarts"] >= 1
    assert gw.worker("primary", 0)["port"] == victim["port"]


def test_all_primary_down_means_degraded_answers_then_primary_resumes(gw: Stack) -> None:
    since = gw.last_seq()
    for index in (0, 1):
        os.kill(gw.worker("primary", index)["pid"], signal.SIGKILL)
    degraded = generate(gw.http)
    assert degraded.status_code == 200
    assert degraded.json()["degraded"] is True
    assert degraded.json()["model"] == "fallback"
    assert degraded.headers["X-Ichaos-Degraded"] == "true"
    wait_until(gw.settled, timeout=90, message="both primary workers restarted and ready")
    assert wait_until(
        lambda: generate(gw.http).json()["degraded"] is False, timeout=30, message="primary again"
    )
    seen = kinds(gw.events(since))
    assert "fallback_on" in seen
    assert seen.index("fallback_on") < seen.index("fallback_off")


def test_slow_primary_is_answered_by_the_fallback_within_the_deadline(gw: Stack) -> None:
    for index in (0, 1):
        gw.fault("primary", index, "slow", ms_per_token=1500)
    started = time.monotonic()
    answer = generate(gw.http, max_new_tokens=4)
    elapsed = time.monotonic() - started
    assert answer.status_code == 200
    assert answer.json()["degraded"] is True
    # Primary got its 1 s deadline, not the 6 s it would have needed.
    assert elapsed < 6


def test_canary_share_follows_the_weight_and_is_sticky_per_user(gw: Stack) -> None:
    gw.http.post("/admin/canary/weight", json={"weight": 20}, headers=AUTH).raise_for_status()

    def pool_of(user: str) -> str:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            answer = generate(http, user=user, max_new_tokens=1)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["pool"])

    # Four clients stay under primary's in-flight limit of six: nothing is shed.
    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(pool_of, [f"user-{i}" for i in range(1000)]))
        again = list(pool.map(pool_of, [f"user-{i}" for i in range(0, 1000, 10)]))
    share = first.count("canary") / len(first)
    # 1,000 users at 20 %: the binomial standard deviation is 1.3 points; allow 4 sigma.
    assert 0.15 <= share <= 0.25, share
    assert again == first[::10], "a user's requests always go to the same pool"


def test_failing_canary_is_rolled_back_with_its_numbers(gw: Stack) -> None:
    since = gw.last_seq()
    gw.http.post("/admin/canary/weight", json={"weight": 50}, headers=AUTH).raise_for_status()
    gw.fault("canary", 0, "oom", count=1000)
    statuses: Counter[int] = Counter()
    for i in range(200):  # bounded; the rollback stops it after a few dozen requests
        statuses[generate(gw.http, user=f"u{i}").status_code] += 1
        if gw.admin()["canary_weight"] == 0:
            break
    assert gw.admin()["canary_weight"] == 0
    assert statuses == Counter({200: sum(statuses.values())}), "primary answered for the canary"
    rollback = [e for e in gw.events(since) if e["kind"] == "canary_rollback"][-1]
    assert rollback["reason"] == "rollback"
    assert rollback["slo"] == "canary-availability"
    assert rollback["canary"]["requests"] >= 10
    assert rollback["canary"]["burn_rate"] > 10
    assert rollback["primary"]["error_ratio"] == 0
    assert rollback["previous"] == 50


def test_breaker_opens_half_opens_and_closes(gw: Stack) -> None:
    since = gw.last_seq()
    gw.fault("primary", 0, "oom", count=3)

    def transitions() -> list[str]:
        return [k for k in kinds([e for e in gw.events(since) if e.get("index") == 0], "primary")
                if k.startswith("breaker_")]  # fmt: skip

    for _ in range(200):  # bounded; three failures on replica 0 open it
        assert generate(gw.http).status_code == 200
        if transitions():
            break
    assert transitions() == ["breaker_open"]
    wait_until(
        lambda: generate(gw.http).status_code == 200 and transitions()[-1] == "breaker_closed",
        timeout=30,
        message="half-open trial succeeded",
    )
    assert transitions() == ["breaker_open", "breaker_half_open", "breaker_closed"]


def test_burst_beyond_the_in_flight_limit_is_shed_with_429(gw: Stack) -> None:
    def one(_: int) -> tuple[int, float, str | None]:
        started = time.monotonic()
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            answer = generate(http, max_new_tokens=16)
        return answer.status_code, time.monotonic() - started, answer.headers.get("Retry-After")

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(one, range(40)))
    shed = [r for r in results if r[0] == 429]
    admitted = [r for r in results if r[0] == 200]
    assert shed, "a burst of 40 against an in-flight limit of 6 must shed some"
    assert all(r[2] == "1" for r in shed)
    assert admitted
    assert len(shed) + len(admitted) == 40
    # Admitted requests were not queued behind the burst: each was within primary's deadline
    # or served by the fallback, never left waiting without bound.
    assert max(r[1] for r in admitted) < 10
    metrics = gw.http.get("/metrics").text
    assert 'ichaos_gateway_shed_total{pool="primary"}' in metrics


def test_stack_status_reports_every_component(gw: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "target_service", "stack", "status", "--state", str(gw.state_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("gateway", "primary-0", "primary-1", "canary-0", "fallback-0"):
        assert name in done.stdout
