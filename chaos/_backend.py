"""Where a scenario runs: the target it drives and the handles its faults need.

``local`` starts the reference stack as processes on loopback with one Toxiproxy proxy per hop
(client → gateway, and gateway → each worker); ``docker`` (in ``_docker``) does the same with
containers. ``url`` drives a service that is already running:
the harness puts a proxy in front of it for the client hop and offers no process, GPU or model
faults. Both leave a lease file in the state directory while they run, so a harness killed with
SIGKILL is cleaned up by the next run: its processes stopped, its registry files restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import yaml

from target_service import (
    ADMIN_EVENTS_PATH,
    ADMIN_STATE_PATH,
    ADMIN_TOKEN_HEADER,
    replica_reload_path,
)

from ._errors import ApplyError, BackendError, HarnessError
from ._injectors import (
    Injector,
    SignalInjector,
    SignalKind,
    process_cmdline,
    restore_leftovers,
)
from ._toxiproxy import ToxiproxyClient, ToxiproxyError, ToxiproxyServer, ToxiproxyUnavailable
from ._wait import wait_until

_LEASE = "lease.json"
_NOWHERE = "127.0.0.1:1"  # a proxy's upstream before its worker's port is known: refused


def state_dir() -> Path:
    """Where backups of corrupted files and the lease of a running experiment live."""
    return Path(os.environ.get("ICHAOS_STATE_DIR", ".ichaos/state"))


def toxiproxy_url() -> str:
    """A toxiproxy-server to share, if one answers here; else each run starts its own."""
    return os.environ.get("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:8474")


def registry_dir() -> Path:
    return Path(os.environ.get("ICHAOS_REGISTRY", ".ichaos/registry"))


def _gone(pid: int, marker: str) -> Callable[[], bool]:
    return lambda: marker not in process_cmdline(pid)


def repair(state: Path | None = None, *, log: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Undo what a killed run left behind in ``state`` (default :func:`state_dir`): stop its
    processes (only ones that are still ours, checked by command line), remove its proxies and
    containers, restore corrupted model files. Returns what was done, each said to ``log`` as
    it is done. A run does this first, as its own step; a target refuses to start while a lease
    it would overwrite is still there."""
    state = state_dir() if state is None else state
    done: list[str] = []
    lease = state / _LEASE
    if lease.is_file():
        try:
            owned = json.loads(lease.read_text())
        except (OSError, json.JSONDecodeError):
            owned = {}
        for entry in owned.get("processes", []):
            pid, marker = int(entry["pid"]), str(entry["marker"])
            if marker and marker in process_cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                    with contextlib.suppress(HarnessError):
                        wait_until(_gone(pid, marker), timeout=15)
                    if marker in process_cmdline(pid):
                        os.kill(pid, signal.SIGKILL)
                done.append(f"stopped {entry['what']} (pid {pid}) left by an earlier run")
                log(done[-1])
        unswept = []
        for entry in owned.get("docker", []):
            from ._docker import sweep_run

            removed = sweep_run(str(entry["engine"]), str(entry["run"]), log=log)
            if removed is None:
                unswept.append(entry)
            else:
                done.extend(removed)
        for entry in owned.get("proxies", []):
            with ToxiproxyClient(str(entry["server"])) as client:
                try:
                    client.delete_proxy(str(entry["name"]))
                except (ToxiproxyError, ToxiproxyUnavailable):
                    continue  # already gone, or the server with it
            done.append(f"removed proxy {entry['name']} (and its toxics) on {entry['server']}")
            log(done[-1])
        if unswept:  # an engine that is down now: its runs stay in the lease for the next repair
            lease.write_text(json.dumps({"processes": [], "proxies": [], "docker": unswept}))
        else:
            lease.unlink(missing_ok=True)
    done.extend(restore_leftovers(state, log=log))
    return done


class Target:
    """A provisioned service. ``url`` is what clients use (through the client-hop proxy);
    ``hops`` maps ``client`` and ``pool[index]`` to Toxiproxy proxy names."""

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

    def workers(self) -> list[dict[str, Any]]:
        raise BackendError("this backend has no worker processes")

    def gateway_pid(self) -> int:
        raise BackendError("this backend has no gateway process")

    def worker(self, pool: str, index: int) -> dict[str, Any]:
        for worker in self.workers():
            if (worker["pool"], worker["index"]) == (pool, index):
                return worker
        raise BackendError(f"the stack has no {pool} replica {index}")

    def pool_size(self, pool: str) -> int:
        return sum(1 for w in self.workers() if w["pool"] == pool)

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

    def reload(self, pool: str, index: int) -> None:
        url = self._admin_url()
        if url is None:
            raise BackendError("this backend cannot reload models")
        answer = httpx.post(
            f"{url}{replica_reload_path(pool, index)}", headers=self.headers(), timeout=10
        )
        if answer.status_code != 202:
            raise BackendError(
                f"reload of {pool}[{index}]: HTTP {answer.status_code}: {answer.text}"
            )

    def _all_ready(self) -> bool:
        """Every replica ready, as the gateway sees it (through the client hop)."""
        answer = httpx.get(f"{self.url}{ADMIN_STATE_PATH}", headers=self.headers(), timeout=5)
        pools = answer.json()["pools"]
        return all(r["ready"] for pool in pools.values() for r in pool["replicas"])

    def process_fault(
        self, replicas: list[tuple[str, int]] | None, kind: SignalKind, label: str
    ) -> Injector:
        """A kill, terminate or pause of the gateway (``replicas`` None) or of these replicas."""
        if replicas is None:
            pids, marker = [self.gateway_pid()], "target_service gateway"
        else:
            pids = [int(self.worker(pool, index)["pid"]) for pool, index in replicas]
            marker = "target_service worker"
        return SignalInjector(pids, kind, label=label, marker=marker)

    def network_partition(self, replicas: list[tuple[str, int]]) -> Injector:
        """These replicas cut off the stack's network (only containers have one to cut)."""
        raise ApplyError("`method: network` partitions need the docker backend")

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


class _Lease:
    """What a running target owns (processes, proxies on a shared server, docker runs), on
    disk from the moment each exists, for :func:`repair` after a crash."""

    def __init__(self, state: Path) -> None:
        self.path = state / _LEASE
        self.processes: list[dict[str, Any]] = []
        self.proxies: list[dict[str, str]] = []
        self.docker: list[dict[str, str]] = []
        state.mkdir(parents=True, exist_ok=True)
        # Runs on an engine that was down at repair: still owed a sweep, kept past this run.
        self.inherited: list[dict[str, str]] = []
        if self.path.is_file():
            try:
                owned = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError):
                owned = {}
            left = [str(p.get("what", "?")) for p in owned.get("processes", [])]
            left += [f"proxy {p.get('name', '?')}" for p in owned.get("proxies", [])]
            if left:
                raise BackendError(
                    f"an earlier run left {', '.join(left[:5])} behind ({self.path}): repair "
                    "first (`chaos.repair()`; `ichaos run` and the pytest plugin do it "
                    "themselves before they start)"
                )
            self.inherited = list(owned.get("docker", []))
            self.docker = list(self.inherited)

    def hold(self, pid: int, marker: str, what: str) -> None:
        self.processes.append({"pid": pid, "marker": marker, "what": what})
        self._write()

    def hold_proxy(self, server: str, name: str) -> None:
        self.proxies.append({"server": server, "name": name})
        self._write()

    def hold_docker(self, engine: str, run: str) -> None:
        self.docker.append({"engine": engine, "run": run})
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        owned = {"processes": self.processes, "proxies": self.proxies, "docker": self.docker}
        tmp.write_text(json.dumps(owned))
        tmp.replace(self.path)

    def release(self) -> None:
        if self.inherited:
            self.processes, self.proxies, self.docker = [], [], list(self.inherited)
            self._write()
        else:
            self.path.unlink(missing_ok=True)


class LocalTarget(Target):
    """The reference stack behind the project's own toxiproxy-server, all on loopback."""

    def __init__(self, stack_file: Path | None, run_dir: Path, *, log: Path | None = None) -> None:
        super().__init__()
        from target_service import StackProcess, default_stack_file, load_stack_config

        self.registry = registry_dir().resolve()
        if not (self.registry / "primary").is_dir():
            raise BackendError(
                f"no model registry at {self.registry}: run ./dev setup or `ichaos models build`"
            )
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
                    hop, name = f"{pool_name.value}[{index}]", f"{pool_name.value}-{index}"
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
            for worker in self.workers():
                hop = self.hops[f"{worker['pool']}[{worker['index']}]"]
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

    def workers(self) -> list[dict[str, Any]]:
        return [dict(w) for w in self._state()["workers"]]

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


class UrlTarget(Target):
    """A service that is already running: a client-hop proxy in front of it, nothing else."""

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
