"""The stream toxics of the project's Toxiproxy build (toxiproxy/), on the real server: each
applied and reverted through the injector (which reads both back), its effect seen by an
independent client (the standard library's http.client) in front of a loopback server that
streams Server-Sent Events as an OpenAI-compatible server does."""

from __future__ import annotations

import http.client
import itertools
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chaos import StreamFault, ToxiproxyClient, ToxiproxyServer
from chaos._faults import stream_toxics
from chaos.injectors import Acted, InjectorGroup, ToxicInjector
from chaos.injectors._base import Injector

EVENTS = [f'data: {{"choices":[{{"text":"t{i}"}}]}}\n\n'.encode() for i in range(6)]
DONE = b"data: [DONE]\n\n"
BODY = b"".join(EVENTS) + DONE
GAP_S = 0.01  # between events, as a server that generates tokens


class _Stream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: several requests on one connection

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [*EVENTS, DONE]:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            time.sleep(GAP_S)
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self) -> None:
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A cut stream closes the client's side: the upstream's next write failing is what a
        # cut does, not an error of the test's server worth a traceback in the log.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def sse_upstream() -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), _Stream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(client: ToxiproxyClient, sse_upstream: str) -> int:
    return client.create_proxy("sse", sse_upstream).port


def fault(**fields: Any) -> StreamFault:
    return StreamFault.model_validate({"kind": "stream", "at": 1, "hop": "client", **fields})


def injector(client: ToxiproxyClient, spec: StreamFault, seed: int = 1) -> Injector:
    toxics = stream_toxics("f", spec, random.Random(seed))
    return InjectorGroup("f", [ToxicInjector(client, "sse", t) for t in toxics])


def ask(conn: http.client.HTTPConnection, path: str = "/v1/completions") -> bytes:
    conn.request("POST" if path != "/health" else "GET", path, body=b"{}")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status} {dict(response.getheaders())} {body!r}")
    return body


@pytest.fixture
def connect() -> Iterator[Callable[[int], http.client.HTTPConnection]]:
    """New connections to a port, each closed when the test ends."""
    opened: list[http.client.HTTPConnection] = []

    def new(port: int) -> http.client.HTTPConnection:
        opened.append(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
        return opened[-1]

    yield new
    for conn in opened:
        conn.close()


def test_the_project_build_says_it_has_the_stream_toxics(toxiproxy: ToxiproxyServer) -> None:
    with toxiproxy.client() as api:
        assert api.has_stream_toxics(), api.version()


def test_a_cut_ends_the_stream_after_n_events_and_its_revert_restores_it(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    cut = injector(client, fault(effect="cut", after=2))
    with cut:
        with pytest.raises(http.client.IncompleteRead) as caught:
            ask(connect(proxy))
        assert caught.value.partial == EVENTS[0] + EVENTS[1]
        assert [t.type.value for t in client.toxics("sse")] == ["stream_cut"]
    assert client.toxics("sse") == []
    assert cut.acted == Acted(seen=1, affected=1)
    assert ask(connect(proxy)) == BODY


def test_a_reset_cut_is_a_tcp_reset(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    with injector(client, fault(effect="cut", after=1, reset=True)):
        assert {t.type.value: t.toxicity for t in client.toxics("sse")} == {
            "reset_peer": 0.0, "stream_cut": 1.0,
        }  # fmt: skip
        with pytest.raises(ConnectionResetError):
            ask(connect(proxy))
    assert client.toxics("sse") == []


def test_a_stall_holds_the_stream_after_n_events(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    conn = connect(proxy)
    with injector(client, fault(effect="stall", after=3, delay_ms=700)):
        conn.request("POST", "/v1/completions", body=b"{}")
        response = conn.getresponse()
        arrivals = []
        for _ in range(len(EVENTS) + 1):
            arrivals.append((response.readline(), time.monotonic()))
            response.readline()  # the blank line that ends the event
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(arrivals)]
        # The one long gap is after the third event; the stall adds to the server's own gap.
        assert gaps.index(max(gaps)) == 2 and max(gaps) >= 0.7
        assert b"".join(line for line, _ in arrivals).count(b"data:") == len(EVENTS) + 1


def test_a_slow_stream_waits_after_every_event(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    with injector(client, fault(effect="slow", delay_ms=100)):
        started = time.monotonic()
        assert ask(connect(proxy)) == BODY  # every byte, in order
        assert time.monotonic() - started >= 0.1 * (len(EVENTS) + 1)


@pytest.mark.parametrize(("mode", "byte"), [("json", b"}"), ("utf8", b"\xff")])
def test_a_corrupted_event_keeps_its_length(
    client: ToxiproxyClient,
    proxy: int,
    mode: str,
    byte: bytes,
    connect: Callable[[int], http.client.HTTPConnection],
) -> None:
    with injector(client, fault(effect="corrupt", event=2, corrupt=mode)):
        body = ask(connect(proxy))
    at = len(EVENTS[0]) + len(b"data: ")
    assert len(body) == len(BODY) and body[at : at + 1] == byte
    assert body[:at] == BODY[:at] and body[at + 1 :] == BODY[at + 1 :]
    with pytest.raises(UnicodeDecodeError if mode == "utf8" else ValueError):
        json.loads(body[at - len(b"data: ") + 6 : len(EVENTS[0]) + len(EVENTS[1])])


def test_drop_done_turns_the_final_event_into_comments(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    with injector(client, fault(effect="drop_done")):
        body = ask(connect(proxy))
    assert body == b"".join(EVENTS) + b":ata: [DONE]\n\n"


def test_a_status_answers_instead_and_closes(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    with injector(client, fault(effect="status", status=503, retry_after=3)):
        conn = connect(proxy)
        conn.request("POST", "/v1/completions", body=b"{}")
        response = conn.getresponse()
        assert response.status == 503
        assert response.getheader("Retry-After") == "3"
        assert response.getheader("Connection") == "close"
        assert b"injected by ichaos" in response.read()


def test_the_share_is_of_requests_on_one_kept_alive_connection_and_repeats_by_seed(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    """Toxiproxy draws a toxicity per connection; the stream toxics draw per answer, so a
    client that keeps one connection for every request still sees the share."""

    def pattern(seed: int) -> tuple[list[bool], Acted | None]:
        cut = injector(client, fault(effect="drop_done", share=0.5), seed=seed)
        conn = connect(proxy)
        hit = []
        with cut:
            for _ in range(40):
                hit.append(ask(conn).endswith(b":ata: [DONE]\n\n"))
        return hit, cut.acted

    first, acted = pattern(7)
    assert acted == Acted(seen=40, affected=sum(first))
    assert 8 <= sum(first) <= 32  # binomial(40, 0.5): outside this about once in 10^4 runs
    assert pattern(7)[0] == first  # the same seed picks the same answers


def test_answers_that_are_not_streams_pass_untouched(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    cut = injector(client, fault(effect="cut", after=0))
    with cut:
        assert ask(connect(proxy), "/health") == b'{"status": "ok"}'
    assert cut.acted == Acted(seen=0, affected=0)


def test_a_connection_open_before_the_fault_is_judged_from_its_next_answer(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    conn = connect(proxy)
    assert ask(conn) == BODY  # the connection exists, idle, when the toxic is added
    with injector(client, fault(effect="drop_done")):
        assert ask(conn).endswith(b":ata: [DONE]\n\n")


def test_a_removed_stall_lets_the_held_stream_go_on(
    client: ToxiproxyClient, proxy: int, connect: Callable[[int], http.client.HTTPConnection]
) -> None:
    stall = injector(client, fault(effect="stall", after=1, delay_ms=60_000))
    stall.apply()
    result: dict[str, Any] = {}

    def read() -> None:
        started = time.monotonic()
        result["body"] = ask(connect(proxy))
        result["took"] = time.monotonic() - started

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        (t.attributes.get("affected") or 0) > 0 for t in client.toxics("sse")
    ):
        time.sleep(0.02)
    stall.revert()
    reader.join(20)
    assert result["body"] == BODY and result["took"] < 30


def test_the_server_refuses_bad_attributes(client: ToxiproxyClient, proxy: int) -> None:
    from chaos import StreamToxicType, Toxic, ToxiproxyError

    bad = Toxic(name="x", type=StreamToxicType.STREAM_CORRUPT, attributes={"event": 0, "share": 2})
    with pytest.raises(ToxiproxyError) as caught:
        client.add_toxic("sse", bad)
    assert caught.value.status == 400
    assert "share must be between 0 and 1" in str(caught.value)
    assert "event must be 1 or more" in str(caught.value)
    assert client.toxics("sse") == []


def test_a_server_without_the_stream_toxics_is_named_before_the_load() -> None:
    """A stock toxiproxy-server (on PATH where Go is missing) has none of them: the run says
    which server and what to do, instead of failing at the first fault."""
    from chaos._faults import stream_support

    class Stock:
        url = "http://127.0.0.1:8474"

        def version(self) -> str:
            return "2.12.0"

    class Bare:
        toxiproxy = Stock()

    problem = stream_support(Bare())  # type: ignore[arg-type]
    assert problem is not None
    assert "the server at http://127.0.0.1:8474 is version '2.12.0', without them" in problem
    assert "./dev setup" in problem
