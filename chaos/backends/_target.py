"""The target interface every backend implements: the URL clients use, the hops and their
proxies, what its faults need, and how it stops."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx

from chaos._errors import (
    ApplyError,
    BackendError,
)
from chaos._toxiproxy import (
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyServer,
    ToxiproxyUnavailable,
)
from chaos.injectors import (
    Injector,
    SignalInjector,
    SignalKind,
)
from target_service import (
    ADMIN_EVENTS_PATH,
    ADMIN_STATE_PATH,
    ADMIN_TOKEN_HEADER,
    replica_reload_path,
)

from ._lease import _Lease, state_dir, toxiproxy_url

_NOWHERE = "127.0.0.1:1"  # a proxy's upstream before its service's port is known: refused
REFERENCE_FAULTS = frozenset({"toxic", "partition", "stream", "process", "gpu", "model", "burst"})
"""What the reference stack honours, as processes or in containers (which add `container`)."""


@dataclass(frozen=True, order=True)
class ReplicaRef:
    """One replica of a pool of the reference stack. Its hop key, ``primary[0]``, is spelled
    by ``str()`` here and nowhere else."""

    pool: str
    index: int

    def __str__(self) -> str:
        return f"{self.pool}[{self.index}]"


@dataclass(frozen=True)
class Replica:
    """A running replica: its own address (not through a proxy), and its process (local) or
    container (docker)."""

    ref: ReplicaRef
    url: str
    pid: int | None = None
    container: str | None = None


class Target:
    """A provisioned service. ``url`` is what clients use (through the client-hop proxy);
    ``hops`` maps hop keys (``client``, ``str(ReplicaRef)``, a link's ``from->to``) to Toxiproxy
    proxy names; ``honours`` is the fault kinds it can carry out."""

    honours: ClassVar[frozenset[str]] = frozenset({"burst"})

    def __init__(self) -> None:
        self.url = ""
        self.direct_url = ""
        # For an https service behind the client-hop proxy: clients connect to the proxy's
        # address but must verify the certificate against, and ask for, the real host.
        self.server_hostname: str | None = None
        self.host_header: str | None = None
        self.admin_token: str | None = None
        self.toxiproxy: ToxiproxyClient | None = None
        self.hops: dict[str, str] = {}
        self.registry: Path | None = None
        self.state = state_dir()
        self.config_path: Path | None = None
        self._created: list[str] = []  # proxies this target made on a shared server
        self._proxy_prefix = ""
        self._lease_ref: _Lease | None = None

    # -- what faults need ----------------------------------------------------------------

    def replicas(self) -> list[Replica]:
        """Every replica running now (a restarted one may have a new pid or address)."""
        raise BackendError("this backend has no replicas")

    def gateway_pid(self) -> int:
        raise BackendError("this backend has no gateway process")

    def replica(self, ref: ReplicaRef) -> Replica:
        for replica in self.replicas():
            if replica.ref == ref:
                return replica
        raise BackendError(f"the stack has no {ref.pool} replica {ref.index}")

    def pool_size(self, pool: str) -> int:
        return sum(1 for r in self.replicas() if r.ref.pool == pool)

    def headers(self) -> dict[str, str]:
        return {ADMIN_TOKEN_HEADER: self.admin_token} if self.admin_token else {}

    def _admin_url(self) -> str | None:
        """The gateway's own address, for its admin API (None: the target has no such API)."""
        return None

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The gateway's events after ``since`` (empty where the target has no such API)."""
        url = self._admin_url()
        if url is None:
            return []
        answer = httpx.get(
            f"{url}{ADMIN_EVENTS_PATH}", params={"since": since}, headers=self.headers(), timeout=5
        )
        answer.raise_for_status()
        events: list[dict[str, Any]] = answer.json()["events"]
        return events

    def reload(self, ref: ReplicaRef) -> None:
        url = self._admin_url()
        if url is None:
            raise BackendError("this backend cannot reload models")
        answer = httpx.post(
            f"{url}{replica_reload_path(ref.pool, ref.index)}", headers=self.headers(), timeout=10
        )
        if answer.status_code != 202:
            raise BackendError(f"reload of {ref}: HTTP {answer.status_code}: {answer.text}")

    def _all_ready(self) -> bool:
        """Every replica ready, as the gateway sees it (through the client hop)."""
        answer = httpx.get(f"{self.url}{ADMIN_STATE_PATH}", headers=self.headers(), timeout=5)
        pools = answer.json()["pools"]
        return all(r["ready"] for pool in pools.values() for r in pool["replicas"])

    def process_fault(
        self, replicas: list[ReplicaRef] | None, kind: SignalKind, label: str
    ) -> Injector:
        """A kill, terminate or pause of the gateway (``replicas`` None) or of these replicas."""
        if replicas is None:
            pids, marker = [self.gateway_pid()], "target_service gateway"
        else:
            found = [self.replica(ref) for ref in replicas]
            if any(r.pid is None for r in found):
                raise ApplyError(f"{label}: no process to signal (containers: a container fault)")
            pids = [int(r.pid) for r in found if r.pid is not None]
            marker = "target_service worker"
        return SignalInjector(pids, kind, label=label, marker=marker)

    def network_partition(self, replicas: list[ReplicaRef]) -> Injector:
        """These replicas cut off the stack's network (only containers have one to cut)."""
        raise ApplyError("`method: network` partitions need the docker backend")

    def container_fault(self, keys: list[str], action: str, label: str) -> Injector:
        """An engine action (``stop``, ``restart``, ``disconnect``) on the containers of
        ``keys``: replica keys (``primary[0]``), ``gateway``, or a compose stack's services."""
        raise ApplyError("container faults need the docker backend")

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "hops": dict(self.hops)}

    def stop(self) -> None:
        raise NotImplementedError

    # -- toxiproxy: a reachable server is shared, else the project's own is started ---------

    def _connect_toxiproxy(self, lease: _Lease, log: Path) -> ToxiproxyServer | None:
        """Use the server at ``ICHAOS_TOXIPROXY_URL`` (default 127.0.0.1:8474) when one answers
        there; otherwise start the project's ``toxiproxy-server`` for this run (returned)."""
        shared = ToxiproxyClient(toxiproxy_url())
        try:
            shared.version()
        except ToxiproxyUnavailable:
            shared.close()
        else:
            self.toxiproxy, self._lease_ref = shared, lease
            # Unique names on a server others use; removed at stop, or by repair() after a crash.
            self._proxy_prefix = f"ichaos-{secrets.token_hex(3)}-"
            return None
        server = ToxiproxyServer(log=log)
        lease.hold(server.proc.pid, "toxiproxy-server", "toxiproxy-server")
        self.toxiproxy = server.client()
        return server

    def _create_proxy(self, hop: str, name: str, upstream: str) -> str:
        assert self.toxiproxy is not None
        proxy = self.toxiproxy.create_proxy(self._proxy_prefix + name, upstream)
        if self._lease_ref is not None:
            self._lease_ref.hold_proxy(self.toxiproxy.url, proxy.name)
            self._created.append(proxy.name)
        self.hops[hop] = proxy.name
        return proxy.listen

    def _release_toxiproxy(self) -> list[str]:
        """Delete the proxies made on a shared server; close the client. Returns problems."""
        errors = []
        if self.toxiproxy is not None:
            for name in self._created:
                try:
                    self.toxiproxy.delete_proxy(name)
                except (ToxiproxyError, ToxiproxyUnavailable) as exc:
                    errors.append(f"proxy {name}: {exc}")
            self._created.clear()
            self.toxiproxy.close()
            self.toxiproxy = None
        return errors
