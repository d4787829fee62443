"""The Toxiproxy client against the real toxiproxy-server, in front of a real loopback server."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from chaos import (
    Stream,
    Toxic,
    ToxicType,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyServer,
    ToxiproxyUnavailable,
)


def fetch(port: int, timeout: float = 5.0) -> tuple[str, float]:
    started = time.monotonic()
    body = httpx.get(f"http://127.0.0.1:{port}/", timeout=timeout).text
    return body, time.monotonic() - started


def test_server_starts_on_an_os_assigned_port(toxiproxy: ToxiproxyServer) -> None:
    assert toxiproxy.port > 0
    with toxiproxy.client() as api:
        assert api.version()


def test_proxy_passes_traffic_and_latency_toxic_adds_its_latency(
    client: ToxiproxyClient, upstream: str
) -> None:
    proxy = client.create_proxy("hello", upstream)
    assert proxy.enabled and proxy.port > 0
    assert fetch(proxy.port)[0] == "hello"
    client.add_toxic(
        "hello", Toxic(name="slow", type=ToxicType.LATENCY, attributes={"latency": 300})
    )
    body, elapsed = fetch(proxy.port)
    assert body == "hello"
    assert elapsed >= 0.3  # the toxic's latency is a lower bound on the round trip
    updated = client.update_toxic("hello", "slow", attributes={"latency": 600, "jitter": 0})
    assert updated.attributes["latency"] == 600
    assert fetch(proxy.port)[1] >= 0.6
    client.remove_toxic("hello", "slow")
    assert client.toxics("hello") == []


def test_disabled_proxy_is_a_partition_and_reset_heals_it(
    client: ToxiproxyClient, upstream: str
) -> None:
    proxy = client.create_proxy("cut", upstream)
    client.update_proxy("cut", enabled=False)
    with pytest.raises(httpx.TransportError):
        fetch(proxy.port, timeout=2)
    client.add_toxic("cut", Toxic(name="reset", type=ToxicType.RESET_PEER, stream=Stream.UPSTREAM))
    client.reset()
    healed = client.proxy("cut")
    assert healed.enabled and healed.toxics == []
    assert fetch(healed.port)[0] == "hello"


def test_upstream_can_be_repointed(client: ToxiproxyClient, upstream: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{unused.getsockname()[1]}"
    proxy = client.create_proxy("moving", nowhere)
    with pytest.raises(httpx.TransportError):
        fetch(proxy.port, timeout=2)
    client.update_proxy("moving", upstream=upstream)
    assert fetch(proxy.port)[0] == "hello"


def test_api_errors_raise_with_the_servers_message(client: ToxiproxyClient, upstream: str) -> None:
    client.create_proxy("twice", upstream)
    with pytest.raises(ToxiproxyError, match="HTTP 409: proxy already exists") as info:
        client.create_proxy("twice", upstream)
    assert info.value.status == 409
    with pytest.raises(ToxiproxyError, match="HTTP 404"):
        client.remove_toxic("twice", "no-such-toxic")
    with pytest.raises(ToxiproxyError, match="HTTP 404"):
        client.proxy("absent")


def test_unreachable_server_is_a_clear_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    with ToxiproxyClient(url, timeout=1) as api, pytest.raises(ToxiproxyUnavailable):
        api.proxies()


def test_missing_binary_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ICHAOS_TOXIPROXY_SERVER", raising=False)
    with pytest.raises(ToxiproxyUnavailable, match=r"run ./dev setup"):
        ToxiproxyServer()
