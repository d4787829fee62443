"""The reference stack as processes on loopback, behind the project's own toxiproxy-server:
one proxy for the client hop, one for each gateway→worker link."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import IO, Any

import yaml

from chaos._errors import (
    BackendError,
)
from chaos._toxiproxy import (
    ToxiproxyServer,
)
from chaos._wait import wait_until

from ._lease import _Lease, built_registry
from ._target import _NOWHERE, REFERENCE_FAULTS, Replica, ReplicaRef, Target


class LocalTarget(Target):
    """The reference stack behind the project's own toxiproxy-server, all on loopback."""

    honours = REFERENCE_FAULTS

    def __init__(self, stack_file: Path | None, run_dir: Path, *, log: Path | None = None) -> None:
        super().__init__()
        from target_service import StackProcess, default_stack_file, load_stack_config

        self.registry = built_registry()
        self._lease = _Lease(self.state)
        self._server: ToxiproxyServer | None = None
        self._stack: Any = None
        self._log: IO[str] | None = None
        try:
            if log is not None:
                self._log = log.open("a", encoding="utf-8")
            self._server = self._connect_toxiproxy(self._lease, run_dir / "toxiproxy.log")
            config = load_stack_config(stack_file or default_stack_file())
            pools: dict[str, Any] = {}
            for pool_name, pool in config.pools.items():
                addresses = []
                for index in range(pool.replicas):
                    hop = str(ReplicaRef(pool_name.value, index))
                    name = f"{pool_name.value}-{index}"
                    addresses.append(self._create_proxy(hop, name, _NOWHERE))
                pools[pool_name.value] = {"addresses": addresses}
            data = config.model_dump(mode="json", exclude={"registry"})
            for name, update in pools.items():
                data["pools"][name].update(update)
            self.config_path = run_dir / "stack.yaml"
            self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
            self.admin_token = secrets.token_urlsafe(16)
            env = {config.admin_token_env: self.admin_token}
            # In the lease from its first moment: a harness killed while the models load (the
            # longest wait of all) leaves a stack the next run stops.
            self._stack = StackProcess(
                self.config_path, run_dir / "stack" / "state.json", self.registry,
                env=env, stderr=self._log,
                on_started=lambda pid: self._lease.hold(pid, "target_service stack", "stack"),
            )  # fmt: skip
            proxies = self.toxiproxy
            assert proxies is not None
            for worker in self._state()["workers"]:
                hop = self.hops[str(ReplicaRef(str(worker["pool"]), int(worker["index"])))]
                proxies.update_proxy(hop, upstream=f"127.0.0.1:{worker['port']}")
            gateway = self._state()["gateway"]
            self.direct_url = str(gateway["url"])
            listen = self._create_proxy("client", "client", f"127.0.0.1:{gateway['port']}")
            self.url = f"http://{listen}"
            wait_until(self._all_ready, timeout=60, message="every replica ready at the gateway")
        except BaseException:
            self.stop()
            raise

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = self._stack.state()
        return state

    def _admin_url(self) -> str:
        return self.direct_url

    def replicas(self) -> list[Replica]:
        return [
            Replica(ReplicaRef(str(w["pool"]), int(w["index"])), str(w["url"]), pid=int(w["pid"]))
            for w in self._state()["workers"]
        ]

    def gateway_pid(self) -> int:
        return int(self._state()["gateway"]["pid"])

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "local",
            "url": self.url,
            "gateway": self.direct_url,
            "toxiproxy": self.toxiproxy.url if self.toxiproxy else None,
            "toxiproxy_shared": self._server is None,
            "hops": dict(self.hops),
            "registry": str(self.registry),
        }

    def stop(self) -> None:
        errors = []
        if self._stack is not None:
            try:
                self._stack.stop()
            except Exception as exc:  # keep going: the proxies and the server must go too
                errors.append(f"stack: {exc}")
            self._stack = None
        errors += self._release_toxiproxy()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if not errors:  # what could not be stopped stays in the lease: the next run repairs it
            self._lease.release()
        if self._log is not None:
            self._log.close()
            self._log = None
        if errors:
            raise BackendError("; ".join(errors) + " (kept in the lease for the next run)")
