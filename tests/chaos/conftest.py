"""Shared by the harness tests: the real toxiproxy-server, a loopback HTTP upstream, and a
model-server-shaped service whose failures a test controls."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chaos import (
    BackendError,
    ToxiproxyClient,
    ToxiproxyServer,
    ToxiproxyUnavailable,
    repair,
    wait_until,
)
from chaos.backends._containers import LABEL_OWNER, LABEL_RUN, _owner, _start_time
from chaos.backends.docker import check_engine, connect
from tests.chaos._service import Service, serve


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[ToxiproxyServer]:
    try:
        server = ToxiproxyServer()
    except ToxiproxyUnavailable as exc:
        pytest.fail(f"the real toxiproxy-server is part of the setup path: {exc}")
    with server:
        yield server


@pytest.fixture
def client(toxiproxy: ToxiproxyServer) -> Iterator[ToxiproxyClient]:
    with toxiproxy.client() as api:
        yield api
        for name in api.proxies():
            api.delete_proxy(name)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Service]]:
    """The controllable service: its URL and the switches (``failing``, ``ready``)."""
    service = Service()
    with serve(service) as url:
        yield url, service


@pytest.fixture
def isolated(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private registry copy and state directory, so nothing here touches the user's."""
    state = tmp_path / "state"
    monkeypatch.setenv("ICHAOS_REGISTRY", str(registry))
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(state))
    yield state
    repair(state, log=lambda _m: None)  # a failed test must not leave anything behind


# -- a Docker-API engine (the docker and compose backends' tests) -----------------------------


class EngineCheck:
    """Whether the engine can run a container, found out once per session: an engine that
    answers its API but cannot start containers fails one test with the engine's message, and
    every other engine test is skipped pointing at it, instead of each failing on its own."""

    def __init__(self) -> None:
        self.client: Any = None
        self.failure: str | None = None
        self.reported = False

    def use(self) -> Any:
        if self.failure is None:
            return self.client
        if not self.reported:
            self.reported = True
            pytest.fail(self.failure, pytrace=False)
        pytest.skip(f"the engine cannot run a container (the first engine test failed): "
                    f"{self.failure}")  # fmt: skip


@pytest.fixture(scope="session")
def engine_check() -> Iterator[EngineCheck]:
    check = EngineCheck()
    try:
        check.client = connect()
    except BackendError as exc:
        pytest.skip(f"no Docker-API engine: {exc}")
    try:
        check_engine(check.client)
    except BackendError as exc:
        check.failure = str(exc)
    yield check
    check.client.close()


@pytest.fixture
def engine(engine_check: EngineCheck) -> Any:
    return engine_check.use()


def ours(client: Any, **labels: str) -> list[str]:
    """The containers and networks of the engine with these labels (any run's without)."""
    wanted = [f"{k}={v}" for k, v in labels.items()] or [LABEL_RUN]
    found = [c.name for c in client.containers.list(all=True, filters={"label": wanted})]
    found += [n.name for n in client.networks.list(filters={"label": wanted})]
    return found


def killed_harness_is_swept(
    engine: Any, isolated: Path, child: subprocess.Popen[bytes], at_least: int, what: str
) -> None:
    """SIGKILL the harness ``child`` once ``at_least`` containers and networks of its own
    exist (``what`` they are), then check that they outlived it, that the lease names them,
    and that the next run's repair removes every one."""
    host, namespace, _pid, _started = _owner().split(":")
    owner = f"{host}:{namespace}:{child.pid}:{_start_time(child.pid)}"
    wait_until(
        lambda: len(ours(engine, **{LABEL_OWNER: owner})) >= at_least, timeout=600,
        interval=0.5, message=what, process=child,
    )  # fmt: skip
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    left = ours(engine, **{LABEL_OWNER: owner})
    assert left, "a SIGKILLed harness cannot have removed its containers"
    assert (isolated / "lease.json").exists()
    # The next run's first step: the lease names the killed run, and everything of it goes.
    done = repair(isolated, log=lambda _m: None)
    assert set(left) <= {line.split(" ")[1] for line in done}
    assert ours(engine, **{LABEL_OWNER: owner}) == []
    assert not (isolated / "lease.json").exists()
