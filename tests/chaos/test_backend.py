"""Where the proxies live: a toxiproxy-server that already answers is shared (uniquely named
proxies, removed at the end or by the next run after a crash); otherwise the run starts its own."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chaos import Stream, Toxic, ToxicType, ToxiproxyServer, UrlTarget, repair


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_a_reachable_server_is_shared_and_left_as_found(
    toxiproxy: ToxiproxyServer, upstream: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", toxiproxy.url)
    with toxiproxy.client() as api:
        before = set(api.proxies())
        target = UrlTarget(f"http://{upstream}", state.parent)
        try:
            name = target.hops["client"]
            assert name.startswith("ichaos-") and name.endswith("-client")
            assert target.describe()["toxiproxy_shared"] is True
            assert name in api.proxies()
            assert httpx.get(f"{target.url}/anything", timeout=5).text == "hello"
            lease = json.loads((state / "lease.json").read_text())
            assert lease == {
                "processes": [],
                "proxies": [{"server": toxiproxy.url, "name": name}],
                "docker": [],
            }
        finally:
            target.stop()
        assert set(api.proxies()) == before
    assert not (state / "lease.json").exists()


def test_a_killed_run_s_proxies_and_toxics_are_removed_by_repair(
    toxiproxy: ToxiproxyServer, upstream: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", toxiproxy.url)
    target = UrlTarget(f"http://{upstream}", state.parent)  # never stopped: a SIGKILLed harness
    name = target.hops["client"]
    assert target.toxiproxy is not None
    target.toxiproxy.add_toxic(
        name, Toxic(name="slow", type=ToxicType.LATENCY, stream=Stream.DOWNSTREAM,
                    attributes={"latency": 1000})
    )  # fmt: skip
    target.toxiproxy.close()

    done = repair(state, log=lambda _m: None)

    assert done == [f"removed proxy {name} (and its toxics) on {toxiproxy.url}"]
    with toxiproxy.client() as api:
        assert name not in api.proxies()
    assert not (state / "lease.json").exists()
    assert repair(state, log=lambda _m: None) == []  # nothing left to do the second time


def test_without_a_reachable_server_the_run_starts_its_own(
    upstream: str, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:9")  # nothing listens there
    target = UrlTarget(f"http://{upstream}", state.parent)
    try:
        assert target.hops["client"] == "client"
        assert target.describe()["toxiproxy_shared"] is False
        (process,) = json.loads((state / "lease.json").read_text())["processes"]
        assert process["what"] == "toxiproxy-server"
        assert httpx.get(f"{target.url}/x", timeout=5).text == "hello"
    finally:
        target.stop()
    assert not Path(f"/proc/{process['pid']}").exists() or "toxiproxy" not in Path(
        f"/proc/{process['pid']}/cmdline"
    ).read_text(errors="replace")
