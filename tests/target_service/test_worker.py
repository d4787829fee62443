"""The worker as a real process over real HTTP: generation, streaming, batching, faults."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaos import wait_until
from tests.conftest import ADMIN_TOKEN, Workers, needs_service

pytestmark = [pytest.mark.slow, needs_service]

AUTH = {"X-Admin-Token": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def worker(module_workers: Workers, built_registry: Path) -> Any:
    return module_workers.start(built_registry)


@pytest.fixture
def client(worker: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        yield http
        # Leave no fault behind for the next test, whatever this one did.
        http.delete("/admin/faults/all", headers=AUTH).raise_for_status()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    found = pattern.search(text)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def generate(
    http: httpx.Client, prompt: str = "The service answers", **body: Any
) -> httpx.Response:
    return http.post("/v1/generate", json={"prompt": prompt, **body})


def test_generate_answers_with_model_version_tokens_and_timings(client: httpx.Client) -> None:
    response = generate(client, max_new_tokens=12)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["model"], data["version"]) == ("primary", "v1")
    assert 1 <= data["tokens"] <= 12
    assert data["text"].strip()
    assert data["finish_reason"] in {"length", "stop"}
    assert data["timings"]["inference_ms"] > 0
    assert data["timings"]["queue_ms"] >= 0


def test_greedy_decoding_is_deterministic(client: httpx.Client) -> None:
    first = generate(client, "Once upon a time", max_new_tokens=16).json()["text"]
    second = generate(client, "Once upon a time", max_new_tokens=16).json()["text"]
    assert first == second


def read_sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any], float]]:
    event = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield event, json.loads(line.removeprefix("data: ")), time.monotonic()


def test_streaming_delivers_tokens_one_event_at_a_time(client: httpx.Client) -> None:
    # 60 ms per token spreads the tokens out, so arrival times show whether they were streamed.
    client.post("/admin/faults/slow", json={"ms_per_token": 60}, headers=AUTH).raise_for_status()
    body = {"prompt": "Once upon a time", "max_new_tokens": 8, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_sse(response))
    tokens = [(data, at) for name, data, at in events if name == "token"]
    name, done, done_at = events[-1]
    assert name == "done"
    assert len(tokens) >= 2
    assert [data["index"] for data, _ in tokens] == list(range(len(tokens)))
    assert "".join(data["text"] for data, _ in tokens) == done["text"]
    # The first token was in the client's hands while later ones were still being generated:
    # 60 ms a step apart at the server, and at least half of that at the client, whose reads
    # jitter. A reply buffered until the end would show them all at once.
    assert done_at - tokens[0][1] >= 0.03 * (len(tokens) - 1)


def test_concurrent_requests_are_batched(client: httpx.Client, worker: Any) -> None:
    before = client.get("/metrics").text
    batches_before = metric(before, "ichaos_worker_batch_size_count")
    singles_before = metric(before, "ichaos_worker_batch_size_bucket", '{le="1.0"}')
    # Hold the inference thread on a first request, so the next seven are certain to queue up
    # together behind it and leave as one batch once it is released.
    client.post("/admin/faults/hang", headers=AUTH).raise_for_status()
    results: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=worker.url, timeout=60) as http:
            results.append(generate(http, max_new_tokens=4).status_code)

    def scrape(name: str) -> float:
        return metric(client.get("/metrics").text, name)

    threads = [threading.Thread(target=send) for _ in range(8)]
    threads[0].start()
    wait_until(
        lambda: scrape("ichaos_worker_batch_size_count") == batches_before + 1,
        timeout=30,
        message="the first request is inside a (hung) batch",
    )
    for thread in threads[1:]:
        thread.start()
    wait_until(
        lambda: scrape("ichaos_worker_queue_depth") == 7,
        timeout=30,
        message="seven requests queued behind the hung batch",
    )
    client.delete("/admin/faults/hang", headers=AUTH).raise_for_status()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 8
    after = client.get("/metrics").text
    batches = metric(after, "ichaos_worker_batch_size_count") - batches_before
    singles = metric(after, "ichaos_worker_batch_size_bucket", '{le="1.0"}') - singles_before
    assert batches == 2, "one hung batch of one, then one batch of the seven that queued"
    assert singles == 1


def test_metrics_cover_requests_latency_ttft_queue_batches_and_tokens(client: httpx.Client) -> None:
    generate(client, max_new_tokens=3).raise_for_status()
    with client.stream(
        "POST", "/v1/generate", json={"prompt": "Hello", "max_new_tokens": 3, "stream": True}
    ) as response:
        response.read()
    text = client.get("/metrics").text
    assert metric(text, "ichaos_worker_requests_total", '{status="200"}') >= 2
    assert metric(text, "ichaos_worker_request_latency_seconds_count") >= 2
    assert metric(text, "ichaos_worker_time_to_first_token_seconds_count") >= 2
    assert metric(text, "ichaos_worker_tokens_generated_total") >= 2
    assert metric(text, "ichaos_worker_queue_depth") == 0
    assert metric(text, "ichaos_worker_ready") == 1
    assert "ichaos_worker_batch_size_bucket" in text


def test_hang_blocks_inference_until_cleared(client: httpx.Client) -> None:
    client.post("/admin/faults/hang", headers=AUTH).raise_for_status()
    assert client.get("/admin/faults", headers=AUTH).json()["hang"]["active"] is True
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/generate", json={"prompt": "hi", "max_new_tokens": 2}, timeout=1.0)
    assert client.get("/healthz").status_code == 200  # alive, just stuck
    client.delete("/admin/faults/hang", headers=AUTH).raise_for_status()
    assert generate(client, max_new_tokens=2).status_code == 200


def test_slow_adds_time_per_token_until_cleared(client: httpx.Client) -> None:
    client.post("/admin/faults/slow", json={"ms_per_token": 100}, headers=AUTH).raise_for_status()
    slow = generate(client, max_new_tokens=5).json()
    # Five decoding steps, each at least 100 ms late.
    assert slow["timings"]["inference_ms"] >= 5 * 100
    cleared = client.delete("/admin/faults/slow", headers=AUTH).json()
    assert cleared["slow"] == {"active": False, "ms_per_token": 0}


def test_oom_fails_the_next_n_requests_only(client: httpx.Client) -> None:
    client.post("/admin/faults/oom", json={"count": 2}, headers=AUTH).raise_for_status()
    for _ in range(2):
        failed = generate(client, max_new_tokens=2)
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "out_of_memory"
    assert generate(client, max_new_tokens=2).status_code == 200
    assert client.get("/readyz").status_code == 200


def test_oom_can_be_cleared_before_it_is_spent(client: httpx.Client) -> None:
    client.post("/admin/faults/oom", json={"count": 5}, headers=AUTH).raise_for_status()
    client.delete("/admin/faults/oom", headers=AUTH).raise_for_status()
    assert generate(client, max_new_tokens=2).status_code == 200


def test_streamed_request_failing_before_its_first_token_gets_an_http_error(
    client: httpx.Client,
) -> None:
    client.post("/admin/faults/oom", json={"count": 1}, headers=AUTH).raise_for_status()
    response = generate(client, stream=True, max_new_tokens=2)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "out_of_memory"


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Admin-Token": "wrong"}, 403)],
    ids=["missing-token", "wrong-token"],
)
def test_fault_hooks_need_the_admin_token(
    client: httpx.Client, headers: dict[str, str], status: int
) -> None:
    assert client.post("/admin/faults/hang", headers=headers).status_code == status
    assert client.get("/admin/faults", headers=headers).status_code == status
    assert client.post("/admin/reload", headers=headers).status_code == status
    assert generate(client, max_new_tokens=2).status_code == 200  # nothing was applied


@pytest.mark.parametrize(
    ("path", "body", "status", "kind"),
    [
        ("/admin/faults/meltdown", {}, 404, "unknown_fault"),
        ("/admin/faults/slow", {}, 422, "invalid_request"),
        ("/admin/faults/slow", {"ms_per_token": "fast"}, 422, "invalid_request"),
        ("/admin/faults/oom", {"count": 0}, 422, "invalid_request"),
        ("/admin/faults/hang", {"forever": True}, 422, "invalid_request"),
    ],
)
def test_bad_fault_requests_are_refused(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, kind: str
) -> None:
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == status
    assert response.json()["error"]["type"] == kind
    snapshot = client.get("/admin/faults", headers=AUTH).json()
    assert not any(v.get("active") or v.get("armed") for v in snapshot.values())


@pytest.mark.parametrize(
    ("content", "status", "kind", "needle"),
    [
        (b'{"prompt": "hi"', 400, "invalid_json", "not valid JSON"),
        (b'{"prompt": ""}', 422, "invalid_request", "prompt"),
        (b"{}", 422, "invalid_request", "prompt"),
        (b'{"prompt": "hi", "max_new_tokens": 0}', 422, "invalid_request", "max_new_tokens"),
        (b'{"prompt": "hi", "max_new_tokens": 257}', 422, "invalid_request", "max_new_tokens"),
        (b'{"prompt": "hi", "max_new_tokens": "9"}', 422, "invalid_request", "max_new_tokens"),
        (b'{"prompt": "hi", "stream": "yes"}', 422, "invalid_request", "stream"),
        (b'{"prompt": "hi", "temperature": 2}', 422, "invalid_request", "temperature"),
        (b'["hi"]', 422, "invalid_request", "body"),
        (json.dumps({"prompt": "x" * 9000}).encode(), 413, "prompt_too_long", "8000"),
        (json.dumps({"prompt": "word " * 1500}).encode(), 413, "prompt_too_long", "context"),
        (b"x" * (300 * 1024), 413, "payload_too_large", "bytes"),
    ],
    ids=[
        "broken-json", "empty-prompt", "no-prompt", "zero-tokens", "too-many-tokens",
        "tokens-as-string", "stream-as-string", "unknown-field", "not-an-object",
        "prompt-over-char-limit", "prompt-over-context", "body-too-large",
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_with_a_json_error(
    client: httpx.Client, content: bytes, status: int, kind: str, needle: str
) -> None:
    response = client.post(
        "/v1/generate", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind
    assert needle in error["message"]


def test_gpu_error_fails_inference_drops_readiness_and_exits_non_zero(
    workers: Workers, built_registry: Path
) -> None:
    worker = workers.start(built_registry, "fallback:v1")
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        http.post("/admin/faults/gpu_error", headers=AUTH).raise_for_status()
        failed = generate(http, max_new_tokens=4)
        assert failed.status_code == 500
        assert failed.json()["error"]["type"] == "device_lost"
    event = worker.wait_for("device_lost", timeout=10)
    assert "device lost" in event["error"]
    assert worker.proc.wait(timeout=15) == 3


def test_gpu_error_armed_then_cleared_does_nothing(workers: Workers, built_registry: Path) -> None:
    worker = workers.start(built_registry, "fallback:v1")
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        http.post("/admin/faults/gpu_error", headers=AUTH).raise_for_status()
        http.delete("/admin/faults/gpu_error", headers=AUTH).raise_for_status()
        assert generate(http, max_new_tokens=2).status_code == 200
        assert http.get("/readyz").status_code == 200
    assert worker.proc.poll() is None


def test_fault_hooks_do_not_exist_unless_enabled(workers: Workers, built_registry: Path) -> None:
    worker = workers.start(built_registry, "fallback:v1", hooks=False, token=None)
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert http.post("/admin/faults/hang", headers=AUTH).status_code == 404
        assert http.get("/admin/faults", headers=AUTH).status_code == 404
        assert http.post("/admin/reload", headers=AUTH).status_code == 404
        assert generate(http, max_new_tokens=2).status_code == 200


def test_fault_hooks_without_a_token_refuse_to_start(built_registry: Path) -> None:
    from target_service import WorkerProcess, WorkerProcessError

    with (
        WorkerProcess(
            "fallback:v1",
            built_registry,
            extra_args=["--fault-hooks"],
            env={"ICHAOS_ADMIN_TOKEN": ""},
        ) as worker,
        pytest.raises(WorkerProcessError, match="exited with code 2"),
    ):
        worker.wait_for("listening", timeout=60)


def test_worker_refuses_a_corrupted_model_but_stays_alive(workers: Workers, registry: Path) -> None:
    weights = registry / "primary" / "v1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    worker = workers.start(registry, ready=False)
    event = worker.wait_for("ready", "load_refused", timeout=120)
    assert event["event"] == "load_refused"
    assert "model.safetensors: sha256 mismatch" in event["error"]
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "model load refused" in ready.json()["reason"]
        assert http.get("/healthz").status_code == 200
        refused = generate(http)
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "not_ready"


def test_reload_verifies_again_refuses_damage_and_recovers_when_restored(
    workers: Workers, registry: Path, tmp_path: Path
) -> None:
    worker = workers.start(registry, "fallback:v1")
    tokenizer = registry / "fallback" / "v1" / "tokenizer.json"
    backup = tmp_path / "tokenizer.json.bak"
    shutil.copy2(tokenizer, backup)
    tokenizer.write_text(tokenizer.read_text()[:-100])
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        assert http.post("/admin/reload", headers=AUTH).status_code == 202
        refused = worker.wait_for("ready", "load_refused", timeout=60)
        assert refused["event"] == "load_refused"
        assert "tokenizer.json: size mismatch" in refused["error"]
        assert http.get("/readyz").status_code == 503

        shutil.copy2(backup, tokenizer)
        assert http.post("/admin/reload", headers=AUTH).status_code == 202
        assert worker.wait_for("ready", "load_refused", timeout=60)["event"] == "ready"
        assert generate(http, max_new_tokens=2).status_code == 200


def test_demo_starts_a_worker_and_shows_its_answer(built_registry: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "target_service", "demo", "--registry", str(built_registry)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "model    primary:v1" in done.stdout
    assert "streamed (one server-sent event per token)" in done.stdout
    assert done.stdout.rstrip().endswith("worker stopped.")
