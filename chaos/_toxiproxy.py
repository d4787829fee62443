"""A typed client for the real Toxiproxy server's HTTP API, and a way to start that server.

Why not toxiproxy-python: it cannot update a toxic, sends POST where the API has PATCH, and
ignores errors other than 400/404/409. A fault that silently failed to apply is the worst outcome
a chaos harness can have, so every non-2xx answer here raises :class:`ToxiproxyError` with the
server's own message, and transport failures raise :class:`ToxiproxyUnavailable`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ._errors import HarnessError


class ToxiproxyError(HarnessError):
    """The Toxiproxy API refused a request; ``status`` and the server's message are kept."""

    def __init__(self, action: str, status: int, message: str) -> None:
        super().__init__(f"toxiproxy: {action}: HTTP {status}: {message}")
        self.status = status


class ToxiproxyUnavailable(HarnessError):
    """The Toxiproxy server cannot be reached or started."""


class Stream(StrEnum):
    UPSTREAM = "upstream"  # client → server
    DOWNSTREAM = "downstream"  # server → client


class ToxicType(StrEnum):
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    SLOW_CLOSE = "slow_close"
    TIMEOUT = "timeout"
    RESET_PEER = "reset_peer"
    SLICER = "slicer"
    LIMIT_DATA = "limit_data"


class StreamToxicType(StrEnum):
    """ichaos's own toxics, registered in the project's build of the server (toxiproxy/)."""

    STREAM_CUT = "stream_cut"
    STREAM_STALL = "stream_stall"
    STREAM_SLOW = "stream_slow"
    STREAM_CORRUPT = "stream_corrupt"
    STREAM_DROP_DONE = "stream_drop_done"
    HTTP_STATUS = "http_status"


STREAM_TOXICS_MARK = "+ichaos-stream."
"""In the server's /version when it is the project's build, with the stream toxics."""

ToxicAttribute = int | float | str | None
"""Stock toxics take whole numbers; the stream toxics also a share, a mode and a null."""


class Toxic(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: ToxicType | StreamToxicType
    stream: Stream = Stream.DOWNSTREAM
    toxicity: float = Field(default=1.0, ge=0, le=1)
    attributes: dict[str, ToxicAttribute] = Field(default_factory=dict)


class Proxy(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: list[Toxic] = Field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class ToxiproxyClient:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ToxiproxyClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, action: str, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise ToxiproxyUnavailable(f"toxiproxy at {self.url}: {action}: {exc}") from exc
        if response.status_code >= 300:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text.strip()
            raise ToxiproxyError(action, response.status_code, message)
        return response.json() if response.content else None

    def version(self) -> str:
        """The server's version: plain text from older servers, ``{"version": …}`` from 2.6 on."""
        try:
            response = self._http.get("/version")
        except httpx.HTTPError as exc:
            raise ToxiproxyUnavailable(f"toxiproxy at {self.url}: {exc}") from exc
        text = response.text.strip()
        try:
            data = response.json()
        except ValueError:
            return text
        return str(data.get("version", text)) if isinstance(data, dict) else text

    def has_stream_toxics(self) -> bool:
        return STREAM_TOXICS_MARK in self.version()

    def proxies(self) -> dict[str, Proxy]:
        raw = self._call("list proxies", "GET", "/proxies")
        return {name: Proxy.model_validate(p) for name, p in raw.items()}

    def create_proxy(self, name: str, upstream: str, listen: str = "127.0.0.1:0") -> Proxy:
        """A new enabled proxy; the default ``listen`` lets the OS pick the port."""
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": True}
        return Proxy.model_validate(self._call(f"create proxy {name}", "POST", "/proxies", body))

    def proxy(self, name: str) -> Proxy:
        return Proxy.model_validate(self._call(f"show proxy {name}", "GET", f"/proxies/{name}"))

    def update_proxy(
        self, name: str, *, upstream: str | None = None, enabled: bool | None = None
    ) -> Proxy:
        body = {
            k: v for k, v in {"upstream": upstream, "enabled": enabled}.items() if v is not None
        }
        raw = self._call(f"update proxy {name}", "PATCH", f"/proxies/{name}", body)
        return Proxy.model_validate(raw)

    def delete_proxy(self, name: str) -> None:
        self._call(f"delete proxy {name}", "DELETE", f"/proxies/{name}")

    def add_toxic(self, proxy: str, toxic: Toxic) -> Toxic:
        raw = self._call(
            f"add toxic {toxic.name} to {proxy}",
            "POST",
            f"/proxies/{proxy}/toxics",
            toxic.model_dump(mode="json"),
        )
        return Toxic.model_validate(raw)

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: dict[str, ToxicAttribute] | None = None,
        toxicity: float | None = None,
    ) -> Toxic:
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = attributes
        if toxicity is not None:
            body["toxicity"] = toxicity
        raw = self._call(
            f"update toxic {name} on {proxy}", "PATCH", f"/proxies/{proxy}/toxics/{name}", body
        )
        return Toxic.model_validate(raw)

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._call(f"remove toxic {name} from {proxy}", "DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[Toxic]:
        raw = self._call(f"list toxics of {proxy}", "GET", f"/proxies/{proxy}/toxics")
        return [Toxic.model_validate(t) for t in raw]

    def reset(self) -> None:
        """Enable every proxy and remove every toxic (the server's own reset)."""
        self._call("reset", "POST", "/reset")


def find_server_binary() -> Path:
    """``$ICHAOS_TOXIPROXY_SERVER``, the project's ``.ichaos/bin``, or one on PATH."""
    candidates = [os.environ.get("ICHAOS_TOXIPROXY_SERVER"),
                  str(Path(".ichaos") / "bin" / "toxiproxy-server"),
                  shutil.which("toxiproxy-server")]  # fmt: skip
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ToxiproxyUnavailable(
        "toxiproxy-server not found: run ./dev setup (it builds v2.12.0 into .ichaos/bin), "
        "put it on PATH, or set ICHAOS_TOXIPROXY_SERVER"
    )


def listening_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on, read from /proc (Linux): the server is started on
    port 0, so the OS picks a free port and there is no race, but it never says which one."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ToxiproxyServer:
    """The project's real ``toxiproxy-server``, started on loopback with an OS-assigned port."""

    def __init__(self, binary: Path | None = None, *, log: Path | None = None) -> None:
        self.binary = binary or find_server_binary()
        self._log = log.open("ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(self.binary), "-host", "127.0.0.1", "-port", "0"],
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        try:
            self.port = self._await_port(timeout=10.0)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def _await_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToxiproxyUnavailable(
                    f"{self.binary} exited with code {self.proc.returncode} on start"
                )
            ports = listening_ports(self.proc.pid)
            if ports:
                return min(ports)
            time.sleep(0.02)
        raise ToxiproxyUnavailable(f"{self.binary} did not listen within {timeout:g}s")

    def client(self) -> ToxiproxyClient:
        return ToxiproxyClient(self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not isinstance(self._log, int):
            self._log.close()

    def __enter__(self) -> ToxiproxyServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
