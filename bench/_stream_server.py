"""A loopback OpenAI-compatible server that streams a fixed number of chunks per request as fast
as it is asked, for bench/loadgen_streaming.py: every answer to ``POST /v1/completions`` is
``--chunks`` ``data:`` chunks of one token each (the last with ``finish_reason``), a usage
chunk and ``data: [DONE]``, in chunked transfer encoding, written at once from bytes made at
start, so that the server costs as little as a server can and the client is what is measured.
``GET /v1/models`` and ``GET /health`` answer too (GuideLLM asks). HTTP/1.1 keep-alive, raw
asyncio protocol, on uvloop where it is installed.

    python bench/_stream_server.py --chunks 32     # prints the port, serves until killed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from typing import Any, ClassVar

MODEL = "m"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: object) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return _chunk(f"data: {text}\n\n".encode())


def stream_answer(chunks: int) -> bytes:
    body = b""
    for index in range(chunks):
        finish = "length" if index == chunks - 1 else None
        choice = {"index": 0, "text": " t", "finish_reason": finish}
        body += _event({"id": "b", "object": "text_completion", "created": 0, "model": MODEL,
                        "choices": [choice]})  # fmt: skip
    usage = {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1}
    body += _event({"id": "b", "object": "text_completion", "created": 0, "model": MODEL,
                    "choices": [], "usage": usage})  # fmt: skip
    body += _event("[DONE]") + b"0\r\n\r\n"
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
    return head + body


def _json_answer(payload: object) -> bytes:
    body = json.dumps(payload).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class _Http(asyncio.Protocol):
    answers: ClassVar[dict[str, bytes]] = {}

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None  # asyncio's Transport, or uvloop's own

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15 :].split(b"\r\n", 1)[0])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            path = head.split(b" ", 2)[1].split(b"?")[0].decode()
            answer = self.answers.get(path)
            assert self.transport is not None
            self.transport.write(answer or b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Http, "127.0.0.1", port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--port", type=int, default=0, help="default: one the OS picks")
    args = parser.parse_args()
    if args.chunks < 1:
        sys.exit("--chunks must be at least 1")
    _Http.answers = {
        "/v1/completions": stream_answer(args.chunks),
        "/v1/models": _json_answer({"object": "list", "data": [{"id": MODEL, "object": "model"}]}),
        "/health": _json_answer({"ok": True}),
    }
    try:
        import uvloop

        uvloop.run(_serve(args.port))
    except ImportError:
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
