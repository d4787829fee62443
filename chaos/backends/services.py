"""The user's own stack as processes: each service of a services stack file started, watched,
restarted by its policy, and wired through Toxiproxy (a proxy per link, one for the client hop).

ichaos is the supervisor here: it picks each service's port, fills the placeholders, keeps a
log per service, and records what happens to the processes as events (``service_started``,
``service_ready``, ``service_exited``) the way the reference gateway records its own. Every
process is in the lease from the moment it exists, so a harness killed with SIGKILL leaves
nothing the next run does not stop. Model directories are checksummed at the start and must be
byte for byte the same at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from chaos._errors import ApplyError, BackendError, HarnessError
from chaos._stackfile import LoadedStack, Restart, ServiceSpec, expand, fixed_values
from chaos._toxiproxy import ToxiproxyServer
from chaos._wait import wait_until
from chaos.injectors import Injector, SignalInjector, SignalKind, settled_cmdline

from ._lease import _Lease
from ._stack import StackTarget
from ._target import _NOWHERE

_TICK = 0.1
_HEALTH_TIMEOUT = 1.0
_BACKOFF_CAP = 8  # a restart waits at most this many times the first delay
_LOG_TAIL = 15


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind (SO_REUSEADDR): the dead process's connections in TIME_WAIT do not
        # keep its port from being used again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n    ".join(text)


@dataclass
class _Service:
    name: str
    spec: ServiceSpec
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0
    marker: str = ""
    started_at: float = 0.0
    ready: bool = False
    starts: int = 0
    failures: int = 0  # starts in a row that never became healthy
    next_start: float | None = None
    planned: bool = False  # the harness asked for this exit (a restart to reload)
    unhealthy: bool = False  # ended by the harness: not healthy within its start timeout
    log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServicesTarget(StackTarget):
    """A services stack file's services as processes on loopback behind Toxiproxy."""

    honours = frozenset({"toxic", "partition", "stream", "process", "gpu", "model", "burst"})

    def __init__(self, stack: LoadedStack, run_dir: Path, *, log: Path | None = None) -> None:
        super().__init__(stack, run_dir)
        self._lease = _Lease(self.state)
        self._server: ToxiproxyServer | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        logs = run_dir / "services"
        self._services = {name: _Service(name, spec, logs / f"{name}.log")
                          for name, spec in stack.stack.services.items()}  # fmt: skip
        self._link_urls: dict[str, dict[str, str]] = {name: {} for name in self._services}
        # For the services that declare fault hooks (`${admin_token}`); never written to a file.
        self.admin_token = secrets.token_urlsafe(16)
        try:
            logs.mkdir(parents=True, exist_ok=True)
            self._checksum_models()
            self._server = self._connect_toxiproxy(self._lease, log or run_dir / "toxiproxy.log")
            for link in stack.stack.links:
                listen = self._create_proxy(link.hop, f"{link.from_}-to-{link.to}", _NOWHERE)
                self._link_urls[link.from_][link.to] = f"http://{listen}"
            listen = self._create_proxy("client", "client", _NOWHERE)
            self.url = f"http://{listen}"
            for name in stack.stack.start_order():
                self._first_start(self._services[name])
            self._monitor = threading.Thread(target=self._watch, name="ichaos-services",
                                             daemon=True)  # fmt: skip
            self._monitor.start()
        except BaseException as exc:
            try:
                self.stop()
            except BackendError as stopping:  # said with the reason it did not start
                exc.add_note(f"and stopping what had started: {stopping}")
            raise

    # -- starting ------------------------------------------------------------------------

    def _command(self, svc: _Service) -> tuple[list[str], dict[str, str]]:
        values = {**fixed_values(self.stack.base), "port": str(svc.port)}
        assert self.admin_token is not None
        values["admin_token"] = self.admin_token
        folder = self.stack.model_dir(svc.name)
        if folder is not None:
            values["model_dir"] = str(folder)
        links = self._link_urls[svc.name]
        try:
            argv = [expand(part, values, links) for part in svc.spec.command]
            env = {k: expand(v, values, links) for k, v in svc.spec.env.items()}
        except ValueError as exc:
            raise BackendError(f"service {svc.name}: {exc}") from exc
        return argv, env

    def _spawn(self, svc: _Service) -> None:
        """Start the service's process (its port kept from an earlier start where it is free)
        and point every proxy to it at its port."""
        if svc.port == 0 or not _port_is_free(svc.port):
            svc.port = _free_port()
        argv, env = self._command(svc)
        if svc.log is None:
            svc.log = svc.log_path.open("ab")
        svc.starts += 1
        said = [part.replace(self.admin_token or "\0", "***") for part in argv]
        svc.log.write(f"== ichaos: start {svc.starts} of {svc.name}: {said}\n".encode())
        svc.log.flush()
        try:
            proc = subprocess.Popen(
                argv, cwd=self.stack.cwd(svc.name), env={**os.environ, **env},
                stdin=subprocess.DEVNULL, stdout=svc.log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            raise BackendError(f"service {svc.name}: cannot run {argv[0]!r}: {exc}") from exc
        svc.proc, svc.pid, svc.started_at, svc.ready = proc, proc.pid, time.monotonic(), False
        svc.next_start, svc.planned = None, False
        try:
            svc.marker = settled_cmdline(proc.pid) or " ".join(argv)
            self._lease.hold(proc.pid, svc.marker, f"service {svc.name}", group=True)
            self._point_proxies(svc)
        except BaseException:
            # Not left running half wired (its proxies pointing elsewhere): ended, and seen as
            # an exit on the next tick.
            _end(proc, svc.spec.stop_timeout)
            raise
        self._event("service_started", service=svc.name, pid=proc.pid, port=svc.port,
                    start=svc.starts)  # fmt: skip

    def _point_proxies(self, svc: _Service) -> None:
        assert self.toxiproxy is not None
        upstream = f"127.0.0.1:{svc.port}"
        hops = [link.hop for link in self.stack.stack.links if link.to == svc.name]
        if svc.name == self.stack.stack.entry_service:
            hops.append("client")
            self.direct_url = svc.url
        for hop in hops:
            proxy = self.toxiproxy.proxy(self.hops[hop])
            if proxy.upstream != upstream:
                self.toxiproxy.update_proxy(self.hops[hop], upstream=upstream)

    def _first_start(self, svc: _Service) -> None:
        self._spawn(svc)
        assert svc.proc is not None
        proc = svc.proc
        try:
            wait_until(lambda: self._healthy(svc), timeout=svc.spec.start_timeout,
                       interval=0.1, process=proc)  # fmt: skip
        except HarnessError as exc:
            code = proc.poll()
            why = (f"exited with {code} before it was healthy" if code is not None else
                   f"did not answer 2xx at {svc.spec.health} within "
                   f"{svc.spec.start_timeout:g}s")  # fmt: skip
            raise BackendError(
                f"service {svc.name} {why} (log {svc.log_path}):\n    {_tail(svc.log_path)}"
            ) from exc
        self._became_ready(svc)

    def _healthy(self, svc: _Service) -> bool:
        try:
            answer = httpx.get(f"{svc.url}{svc.spec.health}", timeout=_HEALTH_TIMEOUT)
        except httpx.HTTPError:
            return False
        return answer.is_success

    def _became_ready(self, svc: _Service) -> None:
        svc.ready, svc.failures = True, 0
        self._event("service_ready", service=svc.name, pid=svc.pid,
                    after=round(time.monotonic() - svc.started_at, 3))  # fmt: skip

    # -- watching ------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(_TICK):
            for svc in self._services.values():
                if self._stopping.is_set():
                    return
                try:
                    self._tend(svc)
                except Exception as exc:
                    with self._lock:
                        self._event("service_error", service=svc.name, error=str(exc))
                        svc.failures += 1
                        svc.next_start = time.monotonic() + self._delay(svc)

    def _tend(self, svc: _Service) -> None:
        # The lock guards the service's state only: a health check (up to a second) and an
        # end (up to its stop timeout) run outside it, so events() and the faults never wait.
        with self._lock:
            if svc.proc is not None and (code := svc.proc.poll()) is not None:
                self._exited(svc, code)
            if svc.proc is None and svc.next_start is not None:
                if time.monotonic() >= svc.next_start and not self._stopping.is_set():
                    self._spawn(svc)
                return
            starting = svc.proc if svc.proc is not None and not svc.ready else None
            started = svc.started_at
        if starting is None:
            return
        healthy = self._healthy(svc)
        with self._lock:
            if svc.proc is not starting:  # ended or restarted meanwhile
                return
            if healthy:
                self._became_ready(svc)
                return
            if time.monotonic() - started <= svc.spec.start_timeout:
                return
            svc.unhealthy = True
            self._event("service_unhealthy", service=svc.name, pid=svc.pid,
                        after=round(time.monotonic() - started, 3))  # fmt: skip
        _end(starting, svc.spec.stop_timeout)  # its exit is seen, the restart decided, next tick

    def _exited(self, svc: _Service, code: int) -> None:
        _kill_group(svc.pid, signal.SIGKILL)  # what it started goes with it
        planned = svc.planned
        if not svc.ready:
            svc.failures += 1
        # Ended by the harness for never becoming healthy: a failure, whatever its exit status.
        failed = code != 0 or svc.unhealthy
        svc.unhealthy = False
        self._event("service_exited", service=svc.name, pid=svc.pid, code=code,
                    signal=-code if code < 0 else None, planned=planned)  # fmt: skip
        svc.proc, svc.ready = None, False
        policy = svc.spec.restart
        if planned:
            svc.next_start = time.monotonic()
        elif policy is Restart.ALWAYS or (policy is Restart.ON_FAILURE and failed):
            svc.next_start = time.monotonic() + self._delay(svc)
        else:
            svc.next_start = None

    def _delay(self, svc: _Service) -> float:
        return float(svc.spec.restart_delay * min(2 ** max(svc.failures - 1, 0), _BACKOFF_CAP))

    # -- what faults need ----------------------------------------------------------------

    def service_url(self, name: str) -> str:
        """Where the service listens now (its own address, not through a proxy)."""
        with self._lock:
            return self._services[name].url

    def service_signal(self, name: str, kind: SignalKind) -> Injector:
        with self._lock:
            svc = self._services.get(name)
            if svc is None:
                raise ApplyError(f"the stack has no service {name!r}")
            if svc.proc is None:
                raise ApplyError(f"service {name} is not running (it is being restarted)")
            pid, marker = svc.pid, svc.marker
        return SignalInjector([pid], kind, label=f"service {name}", marker=marker)

    def restart_service(self, name: str) -> None:
        """End the service and start it again at once, whatever its restart policy."""
        svc = self._services[name]
        with self._lock:
            svc.planned = True
            proc = svc.proc
            if proc is None:
                svc.next_start, svc.failures = time.monotonic(), 0
                return
        _end(proc, svc.spec.stop_timeout)  # this process: never one started since

    def describe(self) -> dict[str, Any]:
        with self._lock:
            services = {s.name: {"url": s.url, "pid": s.pid, "starts": s.starts}
                        for s in self._services.values()}  # fmt: skip
        return {
            "backend": "local", "stack": str(self.stack.path), "url": self.url,
            "entry": self.stack.stack.entry_service, "services": services,
            "toxiproxy": self.toxiproxy.url if self.toxiproxy else None,
            "toxiproxy_shared": self._server is None, "hops": dict(self.hops),
        }  # fmt: skip

    # -- stopping ------------------------------------------------------------------------

    def stop(self) -> None:
        errors = []
        held = False  # something that may still run or exist: the lease keeps it for repair
        self._stopping.set()
        if self._monitor is not None:
            # It may be ending a service (at most its stop timeout, then a SIGKILL).
            longest = max(s.spec.stop_timeout for s in self._services.values())
            self._monitor.join(timeout=longest + 15)
            if self._monitor.is_alive():
                errors.append("the services' watcher did not stop")
                held = True
            self._monitor = None
        for svc in reversed(list(self._services.values())):
            try:
                if svc.proc is not None:
                    _end(svc.proc, svc.spec.stop_timeout)
                if svc.proc is not None and svc.proc.poll() is None:
                    errors.append(f"service {svc.name} (pid {svc.pid}) would not end")
                    held = True
                elif svc.pid:
                    _kill_group(svc.pid, signal.SIGKILL)
            except Exception as exc:  # keep going: every other service must stop too
                errors.append(f"service {svc.name}: {exc}")
                held = True
            if svc.log is not None:
                svc.log.close()
                svc.log = None
            svc.proc = None
        proxies = self._release_toxiproxy()
        errors += proxies
        held |= bool(proxies)
        if self._server is not None:
            self._server.stop()
            self._server = None
        errors += self._model_dir_problems()
        if not held:
            self._lease.release()
        if errors:
            raise BackendError("; ".join(errors))


def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process's group, SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    _kill_group(proc.pid, signal.SIGTERM)
    _kill_group(proc.pid, signal.SIGCONT)  # a paused service cannot act on its SIGTERM
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
