"""The open-loop load generator against a real loopback HTTP server (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chaos import (
    AnswerRules,
    Api,
    Backoff,
    CancelRule,
    Constant,
    Judged,
    LoadGenerator,
    LoadRecord,
    RequestSpec,
    RetryPolicy,
    schedule,
    wait_until,
)
from chaos._loadgen import amplification, judged


class Target:
    """A model-server-shaped endpoint whose stalls and failures the test controls."""

    def __init__(self) -> None:
        self.stall_until = 0.0  # time.monotonic() before which every answer waits
        self.status = 200
        # What the answers look like: "good", "bad-tokens" (a summary whose tokens are
        # "eight"), "not-json", "cut" (a stream that closes after two tokens, no final
        # event), "error-chunk" (an OpenAI stream that sends an error object).
        self.shape = "good"
        self.headers: list[dict[str, str]] = []  # of every chat request, in order
        # A storm: the first `refuse` generate requests get 503 (with `Retry-After` when set);
        # `arrivals` is when each generate request came (monotonic).
        self.refuse = 0
        self.retry_after: str | None = None
        self.arrivals: list[float] = []

    async def generate(self, request: Request) -> Response:
        body = await request.json()
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) <= self.refuse:
            headers = {} if self.retry_after is None else {"Retry-After": self.retry_after}
            return JSONResponse({"error": {"type": "busy"}}, status_code=503, headers=headers)
        wait = self.stall_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.status != 200:
            return JSONResponse({"error": {"type": "boom"}}, status_code=self.status)
        summary: dict[str, Any] = {"text": "a b c", "model": "m", "version": "v1", "tokens": 3,
                                    "degraded": True}  # fmt: skip
        if self.shape == "bad-tokens":
            summary["tokens"] = "eight"
        if not body.get("stream"):
            if self.shape == "not-json":
                return Response(b"<html>oops</html>", media_type="text/html")
            return JSONResponse(summary)

        async def events() -> AsyncIterator[bytes]:
            for index, text in enumerate(["a", " b", " c"]):
                if self.shape == "cut" and index == 2:
                    return
                data = json.dumps({"index": index, "text": text})
                yield f"event: token\ndata: {data}\n\n".encode()
                await asyncio.sleep(0.02)
            yield f"event: done\ndata: {json.dumps(summary)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(self, request: Request) -> Response:
        """OpenAI's completions stream: ``data: {chunk}`` lines, then ``data: [DONE]``."""
        body = await request.json()
        assert body.get("stream") is True

        def chunk(text: str, finish: str | None = None) -> bytes:
            data = {"id": "cmpl-1", "object": "text_completion", "model": "m:v1",
                    "choices": [{"index": 0, "text": text, "finish_reason": finish}]}  # fmt: skip
            return f"data: {json.dumps(data)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            for index, text in enumerate(["a", " b", " c", " d"]):
                if self.shape == "cut" and index == 2:
                    return
                if self.shape == "error-chunk" and index == 1:
                    yield b'data: {"error": {"message": "overloaded"}}\n\n'
                    yield b"data: [DONE]\n\n"
                    return
                yield chunk(text)
                await asyncio.sleep(0.02)
            yield chunk("", "length")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat(self, request: Request) -> Response:
        """OpenAI's chat completions, as vLLM streams them: a first chunk with only the role,
        content chunks (the second carries two tokens), then with ``include_usage`` a chunk
        with ``usage`` and no choice, then ``[DONE]``."""
        body = await request.json()
        self.headers.append(dict(request.headers))
        served = {"x-served-by": "fallback"} if self.shape == "fallback" else {}
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}
        if self.shape == "error-object":
            return JSONResponse({"error": {"message": "no capacity"}})
        if not body.get("stream"):
            return JSONResponse({
                **base, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b c"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
            }, headers=served)  # fmt: skip
        assert body["stream_options"] == {"include_usage": True}

        def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
            data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for text in ["a", " b c", " d"]:
                await asyncio.sleep(0.02)
                yield chunk({"content": text})
            yield chunk({}, "stop")
            usage = {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=served)


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[str, Target]]:
    state = Target()
    app = Starlette(routes=[
        Route("/v1/generate", state.generate, methods=["POST"]),
        Route("/v1/completions", state.completions, methods=["POST"]),
        Route("/v1/chat/completions", state.chat, methods=["POST"]),
    ])  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, message="test server started")
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", state
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def plain(_index: int) -> RequestSpec:
    return RequestSpec({"prompt": "hi", "max_new_tokens": 3})


def test_every_scheduled_request_is_sent_and_recorded(target: tuple[str, Target]) -> None:
    url, _ = target
    times = schedule(Constant(100), 1.0)
    result = asyncio.run(LoadGenerator(url, times, plain).run())
    assert [r.scheduled for r in result.records] == times
    assert all(r.status == 200 and r.error is None for r in result.records)
    assert all(r.model == "m" and r.degraded and r.tokens == 3 for r in result.records)
    health = result.health
    assert (health.scheduled, health.started, health.dropped) == (100, 100, 0)
    assert all(r.lag >= 0 and r.latency_s is not None and r.latency_s > 0 for r in result.records)
    slo = result.records[5].to_slo()
    assert (slo.timestamp, slo.status, slo.degraded) == (times[5], 200, True)


def test_a_stalled_target_does_not_stall_the_schedule(target: tuple[str, Target]) -> None:
    url, state = target
    times = schedule(Constant(50), 2.0)
    stall = 1.0

    async def run() -> tuple[Any, float]:
        generator = LoadGenerator(url, times, plain)
        task = asyncio.create_task(generator.run())
        await asyncio.sleep(0.5)
        state.stall_until = time.monotonic() + stall
        stall_started = asyncio.get_running_loop().time()
        result = await task
        return result, stall_started

    try:
        result, _ = asyncio.run(run())
    finally:
        state.stall_until = 0.0
    assert len(result.records) == len(times) and all(r.status == 200 for r in result.records)
    # Open loop: requests kept leaving on schedule during the stall...
    assert result.health.dropped == 0
    during = [r for r in result.records if 0.6 <= r.scheduled <= 1.4]
    assert len(during) == pytest.approx(40, abs=1)
    # ...and each one's latency counts from its scheduled time, so the stall is measured in
    # full: the ones scheduled early in it waited for most of it.
    early = [r for r in during if r.scheduled <= 0.8]
    assert all(r.latency_s is not None and r.latency_s >= 0.6 for r in early)
    late = [r for r in result.records if r.scheduled >= 1.7]
    assert max(r.latency_s or 0 for r in late) < min(r.latency_s or 0 for r in early)


def test_streaming_records_time_to_first_token_and_gaps(target: tuple[str, Target]) -> None:
    url, _ = target

    def streamed(_index: int) -> RequestSpec:
        return RequestSpec({"prompt": "hi", "max_new_tokens": 3}, stream=True)

    result = asyncio.run(LoadGenerator(url, schedule(Constant(20), 0.5), streamed).run())
    for record in result.records:
        assert record.status == 200 and record.error is None
        assert record.ttft_s is not None and record.latency_s is not None
        assert 0 < record.ttft_s < record.latency_s
        assert len(record.gaps) == 2 and all(g >= 0 for g in record.gaps)
        # The server sleeps 20 ms between tokens, so the last token cannot reach the client
        # sooner than 40 ms after the request left. Individual gaps are not bounded: when the
        # client's reads are delayed (this test's server shares the GIL), tokens arrive bunched.
        assert record.first_token is not None
        last_token = record.first_token + sum(record.gaps)
        assert last_token - record.sent >= 0.04
        assert record.end is not None and last_token <= record.end + 1e-6
        assert record.to_slo().ttft_s == record.ttft_s
        assert record.to_slo().itl_s == max(record.gaps)


def test_failures_are_classified(target: tuple[str, Target]) -> None:
    url, state = target
    state.status = 503
    try:
        result = asyncio.run(LoadGenerator(url, [0.0, 0.01], plain).run())
    finally:
        state.status = 200
    assert [(r.status, r.error) for r in result.records] == [(503, None), (503, None)]

    state.stall_until = time.monotonic() + 5
    try:
        timed_out = asyncio.run(LoadGenerator(url, [0.0], plain, timeout_s=0.2).run())
    finally:
        state.stall_until = 0.0
    assert timed_out.records[0].error == "timeout"
    assert timed_out.records[0].to_slo().status is None

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{unused.getsockname()[1]}"
    refused = asyncio.run(LoadGenerator(nowhere, [0.0], plain).run())
    assert refused.records[0].error == "connect"


def test_in_flight_limit_drops_and_marks_the_run_invalid(target: tuple[str, Target]) -> None:
    url, state = target
    state.stall_until = time.monotonic() + 1.0
    try:
        result = asyncio.run(
            LoadGenerator(url, schedule(Constant(100), 0.3), plain, max_in_flight=5).run()
        )
    finally:
        state.stall_until = 0.0
    assert result.health.dropped == 25
    assert sum(1 for r in result.records if r.error == "dropped") == 25
    assert not result.health.valid
    assert "25 requests dropped" in result.health.reasons[0]


def run_shaped(url: str, state: Target, shape: str, spec: RequestSpec, n: int = 3) -> list[Any]:
    state.shape = shape
    try:
        result = asyncio.run(
            LoadGenerator(url, [i * 0.01 for i in range(n)], lambda _i: spec).run()
        )
    finally:
        state.shape = "good"
    assert len(result.records) == n  # every request of the schedule is a record, whatever came
    return result.records


def test_an_answer_the_generator_cannot_read_is_an_error_not_a_loss(
    target: tuple[str, Target],
) -> None:
    url, state = target
    ask = RequestSpec({"prompt": "hi", "max_new_tokens": 3})
    for record in run_shaped(url, state, "bad-tokens", ask):
        assert (record.status, record.error) == (200, "malformed")
    for record in run_shaped(url, state, "not-json", ask):
        assert (record.status, record.error) == (200, "malformed")


def test_a_native_stream_without_its_final_event_is_an_error(target: tuple[str, Target]) -> None:
    url, state = target
    streamed = RequestSpec({"prompt": "hi", "max_new_tokens": 3}, stream=True)
    for record in run_shaped(url, state, "cut", streamed):
        assert record.error == "stream_incomplete" and record.first_token is not None
        assert len(record.gaps) == 1


def test_openai_completion_streams_are_parsed(target: tuple[str, Target]) -> None:
    url, state = target
    streamed = RequestSpec({"prompt": "hi", "max_tokens": 4}, stream=True,
                           api=Api.OPENAI_COMPLETIONS)  # fmt: skip
    for record in run_shaped(url, state, "good", streamed):
        assert record.status == 200 and record.error is None and record.model == "m:v1"
        assert record.tokens == 4 and len(record.gaps) == 3
        assert record.ttft_s is not None and record.latency_s is not None
        assert 0 < record.ttft_s < record.latency_s
    for record in run_shaped(url, state, "error-chunk", streamed):
        assert record.error == "stream"
    for record in run_shaped(url, state, "cut", streamed):
        assert record.error == "stream_incomplete" and record.tokens == 2


def test_dropped_requests_are_reported_as_records(target: tuple[str, Target]) -> None:
    url, state = target
    seen: list[Any] = []
    state.stall_until = time.monotonic() + 1.0
    try:
        generator = LoadGenerator(
            url, schedule(Constant(100), 0.3), plain, max_in_flight=5, on_record=seen.append
        )
        result = asyncio.run(generator.run())
    finally:
        state.stall_until = 0.0
    dropped = [r for r in seen if r.error == "dropped"]
    assert len(dropped) == result.health.dropped == 25 and len(seen) == 30
    assert all(r.end == r.sent for r in dropped)


def test_an_exception_in_one_request_is_that_requests_error(target: tuple[str, Target]) -> None:
    url, _ = target

    def unsendable(index: int) -> RequestSpec:
        return RequestSpec({"prompt": object()} if index == 1 else {"prompt": "hi"})

    result = asyncio.run(LoadGenerator(url, [0.0, 0.01, 0.02], unsendable).run())
    assert [r.error is None for r in result.records] == [True, False, True]
    assert (result.records[1].error or "").startswith("client: TypeError")


def chat(stream: bool) -> RequestSpec:
    from chaos._protocols import request_body

    body = request_body(Api.OPENAI_CHAT, "hi", max_tokens=4, model="tiny", stream=stream)
    return RequestSpec(body, stream=stream, api=Api.OPENAI_CHAT)


def run_chat(url: str, state: Target, shape: str, spec: RequestSpec, **options: Any) -> list[Any]:
    state.shape = shape
    try:
        result = asyncio.run(LoadGenerator(url, [0.0, 0.05], lambda _i: spec, **options).run())
    finally:
        state.shape = "good"
    return result.records


def test_openai_chat_streams_count_the_servers_tokens(target: tuple[str, Target]) -> None:
    url, state = target
    for record in run_chat(url, state, "good", chat(stream=True)):
        assert record.status == 200 and record.error is None and record.model == "tiny"
        # Three chunks carried text (the role-only one did not); the server counted four.
        assert record.tokens == 4 and len(record.gaps) == 2
        assert record.finish_reason == "stop"
        assert record.first_token is not None and record.last_token is not None
        assert record.tpot_s == pytest.approx((record.last_token - record.first_token) / 3)
        assert record.output_tps == pytest.approx(4 / record.latency_s)


def test_openai_chat_answers_are_read_whole(target: tuple[str, Target]) -> None:
    url, state = target
    for record in run_chat(url, state, "good", chat(stream=False)):
        assert (record.status, record.error, record.tokens) == (200, None, 3)
        assert record.finish_reason == "stop" and record.ttft_s is None and record.tpot_s is None
    for record in run_chat(url, state, "error-object", chat(stream=False)):
        assert record.status == 200 and record.error == "api_error"


def test_headers_go_with_every_request_and_a_header_can_mark_degraded(
    target: tuple[str, Target],
) -> None:
    url, state = target
    state.headers.clear()
    options = {"headers": {"Authorization": "Bearer k-123", "X-Team": "sre"},
               "rules": AnswerRules(header="X-Served-By")}  # fmt: skip
    records = run_chat(url, state, "good", chat(stream=True), **options)
    assert [h["authorization"] for h in state.headers] == ["Bearer k-123"] * 2
    assert all(h["x-team"] == "sre" for h in state.headers)
    assert not any(r.degraded for r in records)
    # "fallback" is not a true value: the header's value must say yes.
    assert not any(r.degraded for r in run_chat(url, state, "fallback", chat(True), **options))
    options["rules"] = AnswerRules(asked="other")
    assert all(r.degraded for r in run_chat(url, state, "good", chat(stream=True), **options))


@pytest.fixture
def storm(target: tuple[str, Target]) -> Iterator[tuple[str, Target]]:
    url, state = target
    state.arrivals, state.refuse, state.retry_after = [], 0, None
    yield url, state
    state.arrivals, state.refuse, state.retry_after = [], 0, None


def with_client(**client: Any) -> Any:
    def request(_index: int) -> RequestSpec:
        return RequestSpec({"prompt": "hi", "max_new_tokens": 3}, client="c", seed=1, **client)

    return request


def one(url: str, request: Any, *, timeout_s: float = 10.0) -> LoadRecord:
    result = asyncio.run(LoadGenerator(url, [0.0], request, timeout_s=timeout_s).run())
    return result.records[0]


def test_a_naive_client_retries_at_once_and_every_attempt_is_recorded(
    storm: tuple[str, Target],
) -> None:
    url, state = storm
    state.refuse = 2
    record = one(url, with_client(retry=RetryPolicy(max_attempts=4)))
    assert record.status == 200 and record.error is None and record.tries == 3
    assert [(a.status, a.error) for a in record.attempts] == [(503, None), (503, None)]
    assert record.attempts[0].sent == record.sent and record.last_sent is not None
    assert record.attempts[1].end <= record.last_sent <= record.end
    assert len(state.arrivals) == 3 and state.arrivals[2] - state.arrivals[0] < 0.5
    # Judged as the user saw it: one request, from its scheduled send to the last answer.
    assert judged([record], Judged.REQUESTS) == [record]
    attempts = judged([record], Judged.ATTEMPTS)
    assert [a.status for a in attempts] == [503, 503, 200]
    assert [a.scheduled for a in attempts] == [record.sent, record.attempts[1].sent,
                                               record.last_sent]  # fmt: skip
    assert amplification([record]) == 3


def test_backoff_and_retry_after_set_the_waits(storm: tuple[str, Target]) -> None:
    url, state = storm
    state.refuse = 2
    backoff = Backoff(initial=0.2, multiplier=2)
    record = one(url, with_client(retry=RetryPolicy(max_attempts=3, backoff=backoff)))
    gaps = [b - a for a, b in itertools.pairwise(state.arrivals)]
    assert record.status == 200 and len(gaps) == 2
    assert 0.2 <= gaps[0] < 0.35 and 0.4 <= gaps[1] < 0.6  # 0.2 s, then 0.4 s
    state.arrivals, state.refuse, state.retry_after = [], 1, "1"
    record = one(url, with_client(retry=RetryPolicy(max_attempts=2, backoff=backoff)))
    assert record.status == 200 and 1.0 <= state.arrivals[1] - state.arrivals[0] < 1.3
    state.arrivals, state.refuse = [], 1
    ignoring = RetryPolicy(max_attempts=2, backoff=backoff, retry_after=False)
    record = one(url, with_client(retry=ignoring))
    assert record.status == 200 and state.arrivals[1] - state.arrivals[0] < 0.5


def test_a_client_gives_up_after_its_attempts_and_on_what_it_does_not_retry(
    storm: tuple[str, Target],
) -> None:
    url, state = storm
    state.refuse = 10
    record = one(url, with_client(retry=RetryPolicy(max_attempts=3)))
    assert (record.status, record.tries, len(state.arrivals)) == (503, 3, 3)
    state.arrivals = []
    record = one(url, with_client(retry=RetryPolicy(when=["429"], max_attempts=3)))
    assert (record.status, record.tries, len(state.arrivals)) == (503, 1, 1)


def test_retries_and_their_waits_fit_in_the_requests_timeout(storm: tuple[str, Target]) -> None:
    url, state = storm
    state.refuse, state.retry_after = 10, "30"
    started = time.monotonic()
    record = one(url, with_client(retry=RetryPolicy(max_attempts=5)), timeout_s=1.0)
    # The 30 s Retry-After outlasts the 1 s timeout: the second attempt never left.
    assert record.error == "timeout" and record.tries == 1 and len(state.arrivals) == 1
    assert time.monotonic() - started < 3


def test_a_client_that_walks_away_is_cancelled_not_failed(storm: tuple[str, Target]) -> None:
    url, _ = storm

    def streamed(**client: Any) -> Any:
        def request(_index: int) -> RequestSpec:
            return RequestSpec({"prompt": "hi", "max_new_tokens": 3}, stream=True, **client)

        return request

    record = one(url, streamed(cancel=CancelRule(after_tokens=1)))
    assert record.cancelled and record.error is None and record.tokens == 1
    assert record.first_token is not None and record.end is not None
    # It read one token (the next one is 20 ms behind) and closed: well before the answer ended.
    assert record.end - record.first_token < 0.02 + 0.01
    record = one(url, streamed(cancel=CancelRule(after=0.03)))
    assert record.cancelled and record.error is None and record.end is not None
    assert 0.03 <= record.end - record.sent < 0.06
    assert judged([record], Judged.REQUESTS) == []
    # Not cancelled by a rule it never reached.
    record = one(url, streamed(cancel=CancelRule(after=5)))
    assert not record.cancelled and record.status == 200 and record.error is None
