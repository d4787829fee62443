"""A loopback OpenAI-compatible server whose timing is known, for benchmarks that compare what
tools measure: every answer waits ``--ttft-ms`` after the request has arrived, then streams its
tokens ``--itl-ms`` apart (one token per chunk), so the true TTFT, inter-token latency and
end-to-end latency are given, not measured.

    python bench/_openai_server.py --ttft-ms 80 --itl-ms 20 --tokens 32
    # prints the port on stdout (--port N: that one), serves until killed

``POST /v1/completions`` and ``POST /v1/chat/completions`` (streamed when the body says
``"stream": true``: ``data:`` chunks, a ``usage`` chunk, ``data: [DONE]``; else one JSON answer
when the last token is due), ``GET /v1/models``, ``GET /health``. The answer has
``min(max_tokens, --tokens)`` tokens (``max_completion_tokens`` too). HTTP/1.1 with keep-alive;
streamed answers use chunked transfer encoding. Each chunk is due at a time computed from the
request's arrival, so a slow chunk never delays the ones after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from typing import Any

MODEL = "m"


class _Timing:
    def __init__(self, ttft_s: float, itl_s: float, tokens: int) -> None:
        self.ttft_s, self.itl_s, self.tokens = ttft_s, itl_s, tokens


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return _chunk(f"data: {text}\n\n".encode())


def _piece(chat: bool, index: int, finish: str | None) -> dict[str, Any]:
    text = f" t{index}"
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if chat:
        choice["delta"] = {"content": text} if index >= 0 else {"role": "assistant"}
    else:
        choice["text"] = text
    kind = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "bench", "object": kind, "created": 0, "model": MODEL, "choices": [choice]}


def _usage(prompt: int, tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}


async def _respond(
    writer: asyncio.StreamWriter, path: str, body: dict[str, Any], timing: _Timing, arrived: float
) -> None:
    chat = path == "/v1/chat/completions"
    asked = body.get("max_completion_tokens") or body.get("max_tokens") or timing.tokens
    tokens = max(1, min(int(asked), timing.tokens))
    prompt = len(str(body.get("prompt") or body.get("messages") or "").split())
    loop = asyncio.get_running_loop()

    async def until(index: int) -> None:
        due = arrived + timing.ttft_s + index * timing.itl_s
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    if not body.get("stream"):
        await until(tokens - 1)
        text = "".join(f" t{i}" for i in range(tokens))
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        answer = json.dumps({
            "id": "bench", "object": "chat.completion" if chat else "text_completion",
            "created": 0, "model": MODEL, "choices": [choice], "usage": _usage(prompt, tokens),
        }).encode()  # fmt: skip
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                     + str(len(answer)).encode() + b"\r\n\r\n" + answer)  # fmt: skip
        await writer.drain()
        return
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                 b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")  # fmt: skip
    if chat:
        writer.write(_event(_piece(chat, -1, None)))  # the role-only chunk, as vLLM sends
    for index in range(tokens):
        await until(index)
        finish = "length" if index == tokens - 1 else None
        writer.write(_event(_piece(chat, index, finish)))
        await writer.drain()
    kind = "chat.completion.chunk" if chat else "text_completion"
    usage = {"id": "bench", "object": kind, "created": 0, "model": MODEL, "choices": [],
             "usage": _usage(prompt, tokens)}  # fmt: skip
    writer.write(_event(usage) + _event("[DONE]") + _chunk(b""))
    await writer.drain()


def _plain(status: str, data: dict[str, Any]) -> bytes:
    body = json.dumps(data).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip


async def _serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timing: _Timing
) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            arrived = loop.time()
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}  # fmt: skip
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
            path = path.split("?", 1)[0]
            if method == "GET" and path == "/v1/models":
                model = {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}
                writer.write(_plain("200 OK", {"object": "list", "data": [model]}))
            elif method == "GET" and path in {"/health", "/healthz"}:
                writer.write(_plain("200 OK", {"ok": True}))
            elif method == "POST" and path in {"/v1/completions", "/v1/chat/completions"}:
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    writer.write(_plain("400 Bad Request", {"error": {"message": "not JSON"}}))
                else:
                    await _respond(writer, path, body, timing, arrived)
            else:
                writer.write(_plain("404 Not Found", {"error": {"message": path}}))
            await writer.drain()
    except ConnectionError:
        return
    finally:
        writer.close()


async def _main(timing: _Timing, port: int = 0) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, timing), "127.0.0.1", port, backlog=1024
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttft-ms", type=float, default=80.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=0, help="default: one the OS picks")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        timing = _Timing(args.ttft_ms / 1000, args.itl_ms / 1000, args.tokens)
        asyncio.run(_main(timing, args.port))
