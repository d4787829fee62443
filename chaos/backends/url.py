"""A service that is already running, by URL: a client-hop proxy in front of it, nothing else."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from chaos._errors import (
    BackendError,
    HarnessError,
)
from chaos._toxiproxy import (
    ToxiproxyServer,
)
from chaos._wait import wait_until

from ._lease import _Lease
from ._target import Target


class UrlTarget(Target):
    """A service that is already running: a client-hop proxy in front of it, nothing else."""

    honours = frozenset({"toxic", "partition", "stream", "burst"})

    def __init__(
        self,
        url: str,
        run_dir: Path,
        *,
        admin_token: str | None = None,
        health: str = "/healthz",
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        """``health``: the path that answers 2xx once the service is up (asked with
        ``headers``, which may carry an API key); the run waits up to ``ready_timeout``."""
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise BackendError(f"url {url!r}: give http(s)://HOST[:PORT]")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._lease = _Lease(self.state)
        self._server: ToxiproxyServer | None = None
        self.admin_token = admin_token
        self.health, self._headers = health, dict(headers or {})
        self._verify: ssl.SSLContext | bool = True if verify is None else verify
        try:
            self._server = self._connect_toxiproxy(self._lease, run_dir / "toxiproxy.log")
            listen = self._create_proxy("client", "client", f"{parts.hostname}:{port}")
            self.url = f"{parts.scheme}://{listen}"
            if parts.scheme == "https":
                self.server_hostname, self.host_header = parts.hostname, parts.netloc
            self.direct_url = url.rstrip("/")
            try:
                wait_until(self._answers, timeout=ready_timeout, interval=0.2,
                           message=f"{self.direct_url}{health} answering 2xx")  # fmt: skip
            except HarnessError as exc:
                raise BackendError(f"{url} is not ready: {exc}") from exc
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        try:
            answer = httpx.get(
                f"{self.direct_url}{self.health}",
                headers=self._headers,
                verify=self._verify,
                timeout=2,
            )
        except httpx.HTTPError:
            return False
        return answer.is_success

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "url", "url": self.url, "service": self.direct_url, "hops": self.hops,
            "toxiproxy": self.toxiproxy.url if self.toxiproxy else None,
            "toxiproxy_shared": self._server is None,
        }  # fmt: skip

    def stop(self) -> None:
        errors = self._release_toxiproxy()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if not errors:  # a proxy that could not be deleted stays in the lease
            self._lease.release()
        if errors:
            raise BackendError("; ".join(errors) + " (kept in the lease for the next run)")
