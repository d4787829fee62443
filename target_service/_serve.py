"""Serving an ASGI app as a process on loopback: bind, announce, run uvicorn.

Lifecycle lines go to stdout as JSON so a parent process can follow a child without polling;
logs go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Announce = Callable[[dict[str, Any]], None]


def announcer() -> Announce:
    lock = threading.Lock()

    def announce(event: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    return announce


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    # Listen now: "listening" and "ready" may be announced before uvicorn's own startup ends,
    # and a client acting on them must land in the backlog, not be refused.
    sock.listen(2048)
    return sock


class Server:
    """uvicorn on a pre-bound socket, with a way to stop it from any thread."""

    def __init__(self, app: Any, sock: socket.socket, *, graceful_s: float = 3.0) -> None:
        import uvicorn

        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(graceful_s),
        )
        self._server = uvicorn.Server(config)
        self._sock = sock
        self.exit_code = 0

    def request_exit(self, code: int, *, after_s: float = 0.3, hard_after_s: float = 5.0) -> None:
        """Stop serving soon (answers in flight get ``after_s`` to leave); never outlive a stuck
        shutdown by more than ``hard_after_s``."""
        self.exit_code = code

        def stop() -> None:
            self._server.should_exit = True

        threading.Timer(after_s, stop).start()
        hard = threading.Timer(hard_after_s, os._exit, args=(code,))
        hard.daemon = True
        hard.start()

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT or ``request_exit``; then end the process."""
        try:
            self._server.run(sockets=[self._sock])
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
        # os._exit: worker threads (e.g. one inside a generate call) must not hold the exit up.
        os._exit(self.exit_code)
