"""A foreign OpenAI-compatible server as the target: ``transformers serve`` (the server that
ships with transformers) serving one of the built-in models, reached by URL through the
client-hop proxy, with a latency toxic and a partition on that hop.

What ichaos measures is checked for sense against what the server itself says (its ``usage``)
and against the faults: the latency toxic shows in the time to first token of the requests it
delayed, the partition in connection failures, and nothing else fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaos import Runner, RunSettings, load_scenario, read_journal, recorders, wait_until
from tests.conftest import needs_service

pytestmark = [pytest.mark.slow, needs_service]

TRANSFORMERS = Path(sys.executable).parent / "transformers"
# The built models' tokenizers have no chat template; the server is given a plain one.
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


class Served:
    def __init__(self, url: str, model: str, log: Path) -> None:
        self.url, self.model, self.log = url, model, log


@pytest.fixture(scope="module")
def served(built_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not TRANSFORMERS.is_file():
        pytest.skip("transformers serve is not installed (the dev extra brings it)")
    model = str((built_registry / "fallback" / "v1").resolve())
    log = tmp_path_factory.mktemp("transformers-serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
           "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}  # fmt: skip
    process = subprocess.Popen(
        [str(TRANSFORMERS), "serve", model, "--host", "127.0.0.1", "--port", "0",
         "--device", "cpu", "--dtype", "float32",
         "--chat-template-kwargs", json.dumps({"chat_template": TEMPLATE})],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        with log.open("w") as out:
            for line in process.stdout:
                lines.append(line)
                out.write(line)
                out.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    port: list[int] = []

    def listening() -> bool:
        for line in lines:
            if match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
                port.append(int(match[1]))
                return True
        return False

    try:
        wait_until(listening, timeout=180, interval=0.2, process=process,
                   message=f"transformers serve listening (log: {log})")  # fmt: skip
        url = f"http://127.0.0.1:{port[0]}"
        wait_until(lambda: _healthy(url), timeout=60, interval=0.2, process=process,
                   message="transformers serve healthy")  # fmt: skip
        yield Served(url, model, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _run(tmp_path: Path, served: Served, api: str, *, stream: bool) -> tuple[Any, list[Any]]:
    path = tmp_path / f"{api}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: foreign-{api}
        backend: url
        url: {served.url}
        service: {{api: {api}, model: '{served.model}', health: /health,
                   api_key_env: ICHAOS_TEST_KEY}}
        load: {{rate: 2/s, duration: 9s, stream: {str(stream).lower()}, max_new_tokens: 8,
                temperature: 0, timeout: 20s}}
        faults:
          - {{name: slow, kind: toxic, toxic: latency, hop: client, attributes: {{latency: 400}},
              at: 2s, duration: 2500ms}}
          - {{name: cut, kind: partition, hop: client, at: 6s, duration: 1500ms}}
        slos:
          - {{name: answered, sli: {{kind: availability}}, target: 0.5, period: run}}
        expect:
          - {{kind: slo_met, slo: answered}}
        """))  # fmt: skip
    secret = f"sk-{os.urandom(12).hex()}"
    os.environ["ICHAOS_TEST_KEY"] = secret
    try:
        result = Runner(
            load_scenario(path), RunSettings(report_dir=tmp_path / "reports"),
            observers=recorders(),
        ).run()  # fmt: skip
    finally:
        del os.environ["ICHAOS_TEST_KEY"]
    # The key went with the requests (test_loadgen checks the headers sent), into no file.
    for file in result.run_dir.rglob("*"):
        assert not file.is_file() or secret.encode() not in file.read_bytes(), file
    requests = [e for e in read_journal(result.run_dir) if e["type"] == "request"]
    return result, requests


@pytest.mark.parametrize("api", ["openai-chat", "openai-completions"])
def test_streamed_answers_of_a_foreign_server_are_measured_truthfully(
    tmp_path: Path, served: Served, api: str, isolated: Path
) -> None:
    result, requests = _run(tmp_path, served, api, stream=True)
    assert result.verdict.status == "passed", result.verdict.model_dump_json(indent=1)
    assert len(requests) == 18
    answered = [r for r in requests if r["error"] is None]
    cut = [r for r in requests if r["error"] is not None]
    # Only the partition fails requests: those it covers (6 s to 7.5 s) and those in flight.
    assert cut and all(r["error"] in {"connect", "reset"} for r in cut)
    assert all(5.4 <= r["scheduled"] <= 7.6 for r in cut), [r["scheduled"] for r in cut]
    for r in answered:
        assert r["status"] == 200 and r["model"] == served.model
        # The server's own count (its usage) is what ichaos records; it streamed at least one
        # chunk per gap, and no more tokens than were asked for.
        assert 1 <= len(r["gaps"]) + 1 <= r["tokens"] <= 8
        assert r["finish_reason"] in {"length", "stop"}
        assert 0 < r["ttft_s"] <= r["latency_s"]
        if r["tokens"] >= 2:
            assert r["tpot_s"] == pytest.approx(
                (r["end"] - r["first_token"]) / (r["tokens"] - 1), abs=0.2
            )
    # The 400 ms toxic delays every answer it covers (the bytes come back through it).
    slowed = [r for r in answered if 2.1 <= r["scheduled"] <= 4.2]
    clear = [r for r in answered if r["scheduled"] < 1.9]
    assert slowed and clear
    assert min(r["ttft_s"] for r in slowed) >= 0.4
    assert min(r["ttft_s"] for r in slowed) > max(r["ttft_s"] for r in clear)


def test_whole_answers_of_a_foreign_server_carry_its_usage(
    tmp_path: Path, served: Served, isolated: Path
) -> None:
    result, requests = _run(tmp_path, served, "openai-chat", stream=False)
    assert result.verdict.status == "passed", result.verdict.model_dump_json(indent=1)
    answered = [r for r in requests if r["error"] is None]
    assert answered
    for r in answered:
        assert 1 <= r["tokens"] <= 8 and r["ttft_s"] is None and r["tpot_s"] is None
        assert r["output_tps"] == pytest.approx(r["tokens"] / r["latency_s"])
    # The server agrees: asked directly, it counts the same tokens for the same prompt.
    direct = httpx.post(
        f"{served.url}/v1/chat/completions", timeout=60,
        json={"model": served.model, "max_tokens": 8, "temperature": 0,
              "messages": [{"role": "user", "content": "Why is the sky blue?"}]},
    ).json()  # fmt: skip
    assert 1 <= direct["usage"]["completion_tokens"] <= 8


def test_a_server_that_never_answers_its_health_path_starts_nothing(
    tmp_path: Path, served: Served, isolated: Path
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: no-health
        backend: url
        url: {served.url}
        service: {{api: openai-chat, model: '{served.model}', health: /nowhere}}
        load: {{rate: 1/s, duration: 2s}}
        """))  # fmt: skip
    result = Runner(load_scenario(path), RunSettings(report_dir=tmp_path / "reports")).run()
    assert result.verdict.status == "harness_error"
    assert "/nowhere answering 2xx" in result.verdict.model_dump_json()
