"""Running one worker as a process: bind a loopback socket, announce it, serve until told to stop.

Lifecycle lines go to stdout as JSON (``listening``, ``ready``, ``load_refused``, ``device_lost``)
so a parent process can follow the worker without polling; logs go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ._worker_app import WorkerSettings, WorkerState, create_app

_GRACE_BEFORE_EXIT_S = 0.3
_HARD_EXIT_AFTER_S = 5.0


def _announcer() -> Any:
    lock = threading.Lock()

    def announce(event: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    return announce


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def serve_worker(
    settings: WorkerSettings,
    *,
    host: str,
    port: int,
    port_file: Path | None,
    threads: int | None,
) -> int:
    import uvicorn

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s worker[{settings.ref}:%(process)d] %(levelname)s %(message)s",
    )
    if threads:
        import torch

        torch.set_num_threads(threads)

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # Listen now: "listening" and "ready" may be announced before uvicorn's own startup ends,
    # and a client acting on them must land in the backlog, not be refused.
    sock.listen(2048)
    bound_port = sock.getsockname()[1]
    announce = _announcer()
    if port_file is not None:
        _write_atomically(port_file, f"{bound_port}\n")
    announce({"event": "listening", "host": host, "port": bound_port, "pid": os.getpid()})

    state = WorkerState(settings, announce)
    config = uvicorn.Config(
        create_app(state),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    exit_code = 0

    def request_exit(code: int) -> None:
        # Called from the inference thread after a sticky device error: give the failed requests
        # a moment to be answered, stop serving, and never outlive a stuck shutdown.
        nonlocal exit_code
        exit_code = code

        def stop() -> None:
            server.should_exit = True

        threading.Timer(_GRACE_BEFORE_EXIT_S, stop).start()
        hard = threading.Timer(_HARD_EXIT_AFTER_S, os._exit, args=(code,))
        hard.daemon = True
        hard.start()

    state.request_exit = request_exit
    try:
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    # os._exit: the inference thread may still be inside a generate call; do not wait for it.
    os._exit(exit_code)
