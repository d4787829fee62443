"""A trivial loopback HTTP/1.1 endpoint for the load generator benchmark, in its own process.

Raw asyncio protocol with keep-alive and a fixed JSON answer, so that at a few thousand
requests per second the endpoint is never what is measured. ``POST /stall`` makes every answer
that is due in the next second wait until that second is over (a one-off 1 s stall).

    python bench/_trivial_server.py      # prints the port on stdout, serves until killed
"""

from __future__ import annotations

import asyncio
import socket
import sys

BODY = b'{"text":"ok","model":"m","version":"v1","tokens":1,"degraded":false}'
OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
STALL_S = 1.0


class _State:
    stall_until = 0.0


class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        loop = asyncio.get_running_loop()
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            now = loop.time()
            if head.startswith("POST /stall "):
                _State.stall_until = now + STALL_S
            if now < _State.stall_until:
                loop.call_at(_State.stall_until, self._answer)
            else:
                self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(OK)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_serve())
    except KeyboardInterrupt:
        sys.exit(0)
