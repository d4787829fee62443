"""The APIs' request bodies and how their answers and streams are read (no server needed:
the lines are fed as a server sends them)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chaos import Api, LoadRecord, ScenarioError, load_scenario
from chaos._protocols import StreamReader, read_answer, request_body


def test_each_api_has_its_body() -> None:
    assert request_body(Api.ICHAOS, "hi", max_tokens=8) == {"prompt": "hi", "max_new_tokens": 8}
    assert request_body(Api.OPENAI_COMPLETIONS, "hi", max_tokens=8, model="m", stream=True) == {
        "prompt": "hi", "max_tokens": 8, "model": "m", "stream": True,
        "stream_options": {"include_usage": True},
    }  # fmt: skip
    chat = request_body(Api.OPENAI_CHAT, "hi", max_tokens=4, model="m", temperature=0.0, user="u")
    assert chat == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                    "model": "m", "temperature": 0.0, "user": "u"}  # fmt: skip


def streamed(api: Api, lines: list[str]) -> LoadRecord:
    record = LoadRecord(0, 0.0, sent=0.0, status=200)
    clock = iter(float(i) for i in range(1, 100))
    reader = StreamReader(api, record, lambda: next(clock))
    for line in lines:
        reader.line(line)
    reader.close()
    record.end = 50.0
    return record


def chunk(**data: Any) -> str:
    return "data: " + json.dumps(data)


def delta(content: str | None = None, finish: str | None = None) -> str:
    body = {} if content is None else {"content": content}
    return chunk(model="m", choices=[{"index": 0, "delta": body, "finish_reason": finish}])


def test_a_chat_stream_ends_at_done_or_at_its_finish_reason() -> None:
    usage = chunk(choices=[], usage={"completion_tokens": 5})
    with_done = streamed(Api.OPENAI_CHAT, [delta("a"), delta("b"), delta(None, "stop"), usage,
                                           "data: [DONE]"])  # fmt: skip
    assert (with_done.error, with_done.tokens, with_done.finish_reason) == (None, 5, "stop")
    assert with_done.first_token == 1.0 and with_done.last_token == 2.0
    assert with_done.tpot_s == pytest.approx(1.0 / 4)
    # transformers serve: usage on the finishing chunk, no [DONE]
    finishing = chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}],
                      usage={"completion_tokens": 2})  # fmt: skip
    no_done = streamed(Api.OPENAI_CHAT, [delta("a"), delta("b"), finishing])
    assert (no_done.error, no_done.tokens, no_done.finish_reason) == (None, 2, "length")
    # cut short: neither
    assert streamed(Api.OPENAI_CHAT, [delta("a"), delta("b")]).error == "stream_incomplete"


def test_errors_inside_a_stream_fail_the_request() -> None:
    assert streamed(Api.OPENAI_CHAT, [delta("a"), chunk(error={"message": "x"})]).error == "stream"
    # transformers serve writes its error message unescaped: not JSON at all
    assert streamed(Api.OPENAI_CHAT, [delta("a"), 'data: {"error": "a "quoted" b"}']).error == (
        "stream"
    )
    assert streamed(Api.OPENAI_CHAT, [chunk(choices=["nonsense"])]).error == "stream"


def test_without_usage_the_chunks_are_counted() -> None:
    record = streamed(Api.OPENAI_COMPLETIONS, [
        chunk(choices=[{"index": 0, "text": "a", "finish_reason": None}]),
        chunk(choices=[{"index": 0, "text": "b", "finish_reason": "length"}]),
        "data: [DONE]",
    ])  # fmt: skip
    assert (record.error, record.tokens, len(record.gaps)) == (None, 2, 1)


def test_whole_answers() -> None:
    record = LoadRecord(0, 0.0, sent=0.0, status=200)
    read_answer(Api.OPENAI_CHAT, record, {
        "model": "m", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 3},
    })  # fmt: skip
    assert (record.error, record.tokens, record.model, record.finish_reason) == (
        None, 3, "m", "stop"
    )  # fmt: skip
    for answer in ({"error": {"message": "busy"}}, {"model": "m", "choices": []},
                   {"model": 7, "choices": [{}]}, None):  # fmt: skip
        record = LoadRecord(0, 0.0, sent=0.0, status=200)
        read_answer(Api.OPENAI_CHAT, record, answer)
        assert record.error in {"api_error", "malformed"}, answer
    refused = LoadRecord(0, 0.0, sent=0.0, status=429)
    read_answer(Api.OPENAI_CHAT, refused, {"error": {"message": "slow down"}})
    assert refused.error is None  # the status says it


def scenario(tmp_path: Path, service: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: s
        backend: url
        url: http://127.0.0.1:9
        service: {service}
        load: {{rate: 1/s, duration: 2s}}
        """)
    )
    return path


@pytest.mark.parametrize(
    ("service", "message"),
    [
        ("{api: openai-chat}", "`api: openai-chat` needs the `model` to ask for"),
        ("{api: grpc}", "service.api: Input should be"),
        (
            "{api: openai-chat, model: m, headers: {Authorization: x}}",
            "Authorization: set by ichaos",
        ),
        ("{api: openai-chat, model: m, api_key_env: 'not a name'}", "service.api_key_env"),
        ("{degraded: {other_model: true}}", "compares with `model`"),
        ("{health: 'no-slash'}", "service.health"),
    ],
)
def test_a_bad_service_block_is_refused(tmp_path: Path, service: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=r"s\.yaml:4: ") as caught:
        load_scenario(scenario(tmp_path, service))
    assert message in str(caught.value)


def test_a_missing_api_key_variable_starts_nothing(tmp_path: Path) -> None:
    path = scenario(tmp_path, "{api: openai-chat, model: m, api_key_env: ICHAOS_TEST_NO_SUCH_KEY}")
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", "--report-dir", str(tmp_path / "r"), str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "service.api_key_env: $ICHAOS_TEST_NO_SUCH_KEY is not set" in done.stderr
    assert not (tmp_path / "r").exists()
