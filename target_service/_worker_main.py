"""Running one worker as a process: bind a loopback socket, announce it, serve until told to stop.

Lifecycle lines on stdout: ``listening``, ``ready``, ``load_refused``, ``device_lost``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ._serve import Server, announcer, bind, write_atomically
from ._worker_app import WorkerSettings, WorkerState, create_app


def serve_worker(
    settings: WorkerSettings,
    *,
    host: str,
    port: int,
    port_file: Path | None,
    threads: int | None,
) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s worker[{settings.ref}:%(process)d] %(levelname)s %(message)s",
    )
    if threads:
        import torch

        torch.set_num_threads(threads)

    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    announce = announcer()
    if port_file is not None:
        write_atomically(port_file, f"{bound_port}\n")
    announce({"event": "listening", "host": host, "port": bound_port, "pid": os.getpid()})

    state = WorkerState(settings, announce)
    server = Server(create_app(state), sock)
    state.request_exit = server.request_exit
    return server.run()
