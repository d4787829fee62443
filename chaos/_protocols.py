"""The APIs ichaos speaks to a service: what a request body is, and how an answer or a stream of
each is read into a :class:`LoadRecord`.

- ``ichaos``: the reference stack's own ``POST /v1/generate``; streams are ``event: token`` …
  ``event: done`` (the summary, with model, version, tokens and degraded).
- ``openai-completions``: ``POST /v1/completions``; ``choices[0].text``.
- ``openai-chat``: ``POST /v1/chat/completions``; ``choices[0].message.content``, streamed as
  ``choices[0].delta.content``.

OpenAI streams are ``data: {chunk}`` lines ending with ``data: [DONE]``; with
``stream_options.include_usage`` the last chunk before it carries ``usage`` and no choice (vLLM,
OpenAI), or the chunk with the ``finish_reason`` carries it (``transformers serve``). The output
token count is ``usage.completion_tokens`` where the server gives it, else the number of chunks
that carried text. A ``{"error": …}`` object, as an answer or as a chunk, makes the request an
error, as does a line that is not UTF-8 or a native token whose data is not JSON, and a stream
that ends before its end: ``[DONE]``, or a chunk with a
``finish_reason`` (``transformers serve`` sends no ``[DONE]``; a stream cut short has neither).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._loadgen import LoadRecord

# Every streamed chunk is parsed: orjson (the `distributed` extra brings it) does it in about
# a third of the time, which is schedule kept at high rates. It is the stricter of the two
# (no NaN, no lone surrogates), never the more lenient.
_loads: Callable[[bytes | str], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - without the extra
    _loads = json.loads


class Api(StrEnum):
    ICHAOS = "ichaos"
    OPENAI_COMPLETIONS = "openai-completions"
    OPENAI_CHAT = "openai-chat"

    @property
    def path(self) -> str:
        return _PATHS[self]

    @property
    def openai(self) -> bool:
        return self is not Api.ICHAOS


_PATHS = {
    Api.ICHAOS: "/v1/generate",
    Api.OPENAI_COMPLETIONS: "/v1/completions",
    Api.OPENAI_CHAT: "/v1/chat/completions",
}


def request_body(
    api: Api,
    prompt: str,
    *,
    max_tokens: int,
    model: str | None = None,
    temperature: float | None = None,
    user: str | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """The JSON body of one request in ``api``."""
    body: dict[str, Any]
    if api is Api.ICHAOS:
        body = {"prompt": prompt, "max_new_tokens": max_tokens}
    elif api is Api.OPENAI_COMPLETIONS:
        body = {"prompt": prompt, "max_tokens": max_tokens}
    else:
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if model is not None:
        body["model"] = model
    if temperature is not None:
        body["temperature"] = temperature
    if user is not None:
        body["user"] = user
    if stream:
        body["stream"] = True
        if api.openai:  # else the token count of a stream is only the chunks' count
            body["stream_options"] = {"include_usage": True}
    return body


@dataclass(frozen=True)
class AnswerRules:
    """How an answer says it is degraded, beyond the native ``degraded`` field: a response
    header whose value is true (``1``, ``true``, ``yes``), or a ``model`` other than the one
    asked for (``asked``)."""

    header: str | None = None
    asked: str | None = None

    def degraded_by(self, headers: Mapping[str, str], model: str | None) -> bool:
        if self.header is not None and headers.get(self.header, "").strip().lower() in _TRUE:
            return True
        return self.asked is not None and model is not None and model != self.asked


_TRUE = {"1", "true", "yes"}


def read_answer(api: Api, record: LoadRecord, data: dict[str, Any] | None) -> None:
    """A whole (not streamed) answer into ``record``. A 2xx answer that cannot be read, or that
    carries an error object, is an error: the service said OK but did not answer."""
    ok = record.status is not None and 200 <= record.status < 300
    if not data or (ok and "error" in data and api.openai):
        if ok:
            record.error = "malformed" if not data else "api_error"
        return
    if api is Api.ICHAOS:
        _native_summary(record, data)
        return
    model, usage = data.get("model"), data.get("usage")
    choice = _first_choice(data)
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    shaped = isinstance(model, str | None) and _count(tokens, none=True)
    if choice is None or not shaped:
        if ok:
            record.error = "malformed"
        return
    record.model = model
    record.tokens = tokens or 0  # no usage: the count is unknown, and not streamed to count
    if isinstance(data.get("version"), str):
        record.version = data["version"]
    record.finish_reason = _text_or_none(choice.get("finish_reason"))
    if isinstance(data.get("degraded"), bool):  # the reference stack says so itself
        record.degraded = data["degraded"]


def _native_summary(record: LoadRecord, data: dict[str, Any]) -> None:
    ok = record.status is not None and 200 <= record.status < 300
    model, version = data.get("model"), data.get("version")
    tokens, degraded = data.get("tokens", 0), data.get("degraded", False)
    shaped = (
        isinstance(model, str | None) and isinstance(version, str | None)
        and _count(tokens) and isinstance(degraded, bool)
    )  # fmt: skip
    if not shaped:
        if ok:
            record.error = "malformed"
        return
    record.model, record.version = model, version
    record.degraded, record.tokens = degraded, tokens


class StreamReader:
    """One SSE stream, line by line. Every chunk that carries text is timed as a token's
    arrival; the end is the final event (``done`` or ``[DONE]``), whose absence is
    ``stream_incomplete``."""

    def __init__(self, api: Api, record: LoadRecord, now: Callable[[], float]) -> None:
        self.api, self.record, self.now = api, record, now
        self.event = "message"
        self.finished = False
        self.counted = 0
        self.usage_tokens: int | None = None

    def line(self, line: str) -> None:
        if not line:
            self.event = "message"  # a blank line ends an SSE event
            return
        if line.startswith("data:"):
            payload = line[5:].strip()
        elif line.startswith("event:"):
            self.event = line[6:].strip()
            return
        else:
            return
        if self.api.openai:
            self._openai(payload)
        elif self.event == "token":
            if parse_json(payload) is None:  # a token's data is a JSON object
                self.record.error = "stream"
            self._token()
        elif self.event == "done":
            read_answer(self.api, self.record, parse_json(payload))
            self.finished = True
        elif self.event == "error":
            self.record.error = "stream"

    def close(self) -> None:
        if self.api.openai:
            self.record.tokens = self.usage_tokens if self.usage_tokens else self.counted
        elif self.finished and self.record.tokens == 0:
            self.record.tokens = self.counted
        if not self.finished and self.record.error is None:
            self.record.error = "stream_incomplete"

    def _token(self) -> None:
        at = self.now()
        if self.record.last_token is None:
            self.record.first_token = at
        else:
            self.record.gaps.append(at - self.record.last_token)
        self.record.last_token = at
        self.counted += 1

    def _openai(self, payload: str) -> None:
        if payload == "[DONE]":
            self.finished = True
            return
        data = parse_json(payload)
        if data is None or "error" in data:
            self.record.error = "stream"
            return
        usage = data.get("usage")
        if isinstance(usage, dict) and _count(usage.get("completion_tokens")):
            self.usage_tokens = usage["completion_tokens"]
        if isinstance(data.get("model"), str):
            self.record.model = data["model"]
        if isinstance(data.get("degraded"), bool):
            self.record.degraded = data["degraded"]
        choices = data.get("choices")
        if choices in (None, []):  # the usage chunk has no choice
            return
        choice = _first_choice(data)
        if choice is None:
            self.record.error = "stream"
            return
        if _chunk_text(self.api, choice):
            self._token()
        if (reason := _text_or_none(choice.get("finish_reason"))) is not None:
            self.record.finish_reason = reason
            self.finished = True


def _chunk_text(api: Api, choice: dict[str, Any]) -> str:
    if api is Api.OPENAI_CHAT:
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


def _first_choice(data: dict[str, Any]) -> dict[str, Any] | None:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    return choices[0]


def _count(value: Any, *, none: bool = False) -> bool:
    if value is None:
        return none
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text_or_none(value: Any) -> str | None:
    return value[:40] if isinstance(value, str) else None


def parse_json(raw: bytes | str) -> dict[str, Any] | None:
    try:
        data = _loads(raw)
    except ValueError:  # not JSON, or not UTF-8 (orjson's error is a ValueError too)
        return None
    return data if isinstance(data, dict) else None
