"""An https service behind the client-hop proxy: clients connect to the proxy's loopback
address, yet the certificate is verified against the service's real host name, which is also
the Host they ask for."""

from __future__ import annotations

import asyncio
import socket
import ssl
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from chaos import (
    LoadGenerator,
    LoadRecord,
    RequestSpec,
    Runner,
    RunSettings,
    load_scenario,
    read_journal,
    recorders,
    wait_until,
)

HOSTS: list[str] = []


async def generate(request: Request) -> JSONResponse:
    HOSTS.append(request.headers["host"])
    return JSONResponse({"text": "ok", "model": "m", "version": "v1", "tokens": 1})


async def healthz(_request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def metrics(_request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"# TYPE served_total counter\nserved_total {len(HOSTS)}\n")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def serve(ca: trustme.CA, name: str, folder: Path) -> Iterator[int]:
    chain = folder / f"{name}.pem"
    ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(str(chain))
    app = Starlette(routes=[Route("/v1/generate", generate, methods=["POST"]),
                            Route("/healthz", healthz), Route("/metrics", metrics)])  # fmt: skip
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ssl_certfile=str(chain),
                            ssl_cert_reqs=ssl.CERT_NONE)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, message="https server started")
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def run(tmp_path: Path, port: int) -> list[dict[str, object]]:
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: https
        backend: url
        url: https://localhost:{port}
        service: {{ca_file: ca.pem}}
        load: {{rate: 5/s, duration: 2s}}
        steady_state:
          interval: 0.5s
          probes:
            - {{name: alive, kind: http, path: /healthz, when: [before, during, after]}}
        metrics:
          interval: 0.5s
          series: [{{name: served, metric: served_total}}]
        expect:
          - {{kind: metric, series: served, stat: last, at_least: 5}}
        """)
    )
    settings = RunSettings(report_dir=tmp_path / "reports", settle=1.0)
    result = Runner(load_scenario(path), settings, observers=recorders()).run()
    verdict = result.verdict
    assert not verdict.harness_errors, verdict.harness_errors
    # Probes go through the proxy as the load does; the metrics straight to the service.
    probes = verdict.steady_state.results
    assert probes["during"] and all(p.ok for phase in probes.values() for p in phase), probes
    assert verdict.expectations[0].passed, verdict.expectations
    assert verdict.metrics[0].samples >= 3 and not verdict.metrics[0].problems
    return [e for e in read_journal(result.run_dir) if e["type"] == "request"]


def test_the_real_host_name_is_verified_through_the_proxy(
    ca: trustme.CA, tmp_path: Path, isolated: Path
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))  # the scenario's service.ca_file
    HOSTS.clear()
    for port in serve(ca, "localhost", tmp_path):
        requests = run(tmp_path, port)
        assert len(requests) == 10
        assert all(r["status"] == 200 and r["error"] is None for r in requests), requests
        assert set(HOSTS) == {f"localhost:{port}"}


def test_the_name_checked_is_the_one_given_not_the_address(ca: trustme.CA, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    verify = ssl.create_default_context(cafile=bundle)
    spec = RequestSpec({"prompt": "hi", "max_new_tokens": 1})
    for port in serve(ca, "localhost", tmp_path):
        url = f"https://127.0.0.1:{port}"  # an address the certificate does not name

        def records(name: str | None, at: str = url) -> list[LoadRecord]:
            generator = LoadGenerator(
                at, [0.0, 0.01], lambda _i: spec, server_hostname=name, ssl_context=verify
            )
            return asyncio.run(generator.run()).records

        assert all(r.status == 200 for r in records("localhost"))
        assert all(r.error == "tls" for r in records("other.example"))
        assert all(r.error == "tls" for r in records(None))
