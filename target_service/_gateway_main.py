"""Running the gateway as a process (the supervisor starts it)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from ._errors import ServiceError
from ._gateway_app import GatewaySettings, create_gateway_app
from ._gateway_core import ReplicaSpec
from ._serve import Server, announcer, bind
from ._stack_config import PoolName, StackConfig
from ._supervisor import STACK_SECRET_ENV


def read_replicas(path: Path) -> list[ReplicaSpec]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return [
            ReplicaSpec(PoolName(r["pool"]), int(r["index"]), str(r["model"]), str(r["url"]))
            for r in raw
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServiceError(f"{path}: not a replicas file: {exc}") from exc


def serve_gateway(
    config: StackConfig, replicas: list[ReplicaSpec], *, host: str, port: int, token_env: str
) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s gateway[%(process)d] %(levelname)s %(message)s",
    )
    sock = bind(host, port)
    announce = announcer()
    announce(
        {"event": "listening", "host": host, "port": sock.getsockname()[1], "pid": os.getpid()}
    )
    settings = GatewaySettings(
        config=config,
        replicas=replicas,
        admin_token=os.environ.get(token_env) or None,
        stack_secret=os.environ.get(STACK_SECRET_ENV) or None,
    )
    app = create_gateway_app(settings, on_ready=lambda: announce({"event": "ready"}))
    return Server(app, sock).run()
