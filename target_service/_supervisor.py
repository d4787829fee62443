"""The supervisor: start the stack's workers and gateway, restart what exits, stop everything.

``stack up`` runs in the foreground. Children are started from the main thread with a parent-death
signal, so even a SIGKILLed supervisor leaves no worker behind; a restarted worker gets the port it
had, so the gateway (and any proxy in front of it) keeps reaching it. A warm standby worker (every
import already paid, no model yet) waits on stdin; a restart hands it the dead worker's model and
port, which brings a replica back in well under a second instead of a cold start's seconds, and a
new standby is warmed behind it. Each exit and restart is sent
to the gateway's event log. The state file (pids, ports, addresses) is rewritten atomically on
every change and removed on the way out.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ._errors import ServiceError
from ._eventlog import EventKind
from ._protocol import STACK_SECRET_HEADER
from ._serve import write_atomically
from ._stack_config import PoolName, StackConfig, worker_options

log = logging.getLogger(__name__)

STACK_SECRET_ENV = "ICHAOS_STACK_SECRET"
_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 5.0
_STANDBY_PATIENCE_S = 15.0
_STANDBY_ATTEMPTS = 3


class StackError(ServiceError):
    """The stack cannot be started, found or stopped."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when we are orphaned.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    name: str
    args: list[str]
    log_path: Path
    pool: PoolName | None = None
    index: int = 0
    model: str = ""
    address: str | None = None
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    status: str = "starting"
    exit_code: int | None = None
    announced: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.address}" if self.address else self.url

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pool": self.pool.value if self.pool else None,
            "index": self.index,
            "model": self.model,
            "pid": self.proc.pid if self.proc else None,
            "port": self.port,
            "url": self.url,
            "gateway_url": self.gateway_url,
            "status": self.status,
            "restarts": self.restarts,
            "last_exit_code": self.exit_code,
            "log": str(self.log_path),
        }


class Supervisor:
    def __init__(
        self, config: StackConfig, config_path: Path, state_path: Path, registry: Path
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.state_path = state_path
        self.registry = registry
        self.log_dir = state_path.parent / "logs"
        self.token = os.environ.get(config.admin_token_env) or None
        self.secret = secrets.token_hex(16)
        self.stop = threading.Event()
        # Keyed by pid: a standby's process becomes a worker's without a new follower thread.
        self.exits: queue.Queue[int] = queue.Queue()
        self.announcements: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.by_pid: dict[int, Child] = {}
        self.workers: list[Child] = []
        self.gateway: Child | None = None
        self.standby: Child | None = None
        self.standbys = 0
        self.standby_failures = 0
        self.started = time.time()

    # children ------------------------------------------------------------------------------
    def _worker_args(self, model: str | None) -> list[str]:
        return [
            sys.executable, "-m", "target_service", "worker",
            *(["--model", model] if model else []),
            "--registry", str(self.registry), *worker_options(self.config),
        ]  # fmt: skip

    def _spawn(self, child: Child) -> None:
        standby = self.standby
        if child.pool is not None and standby is not None and standby.status == "standby":
            self._assign(standby, child)
            return
        self._start(child)

    def _assign(self, standby: Child, child: Child) -> None:
        assert standby.proc is not None and standby.proc.stdin is not None
        order = json.dumps({"model": child.model, "port": child.port}) + "\n"
        try:
            standby.proc.stdin.write(order)
            standby.proc.stdin.close()
        except OSError:  # it died meanwhile: start cold, and warm another one
            self.standby = None
            self._start(child)
            self._warm_standby()
            return
        child.proc = standby.proc
        child.log_path = standby.log_path
        child.started_at = time.monotonic()
        child.status = "starting"
        child.restart_at = None
        self.by_pid[child.proc.pid] = child
        self.standby = None
        self._warm_standby()

    def _warm_standby(self) -> None:
        self.standbys += 1
        standby = Child(
            name="standby",
            args=[*self._worker_args(None), "--standby"],
            log_path=self.log_dir / f"standby-{self.standbys}.log",
        )
        self.standby = standby
        self._start(standby, stdin=True)

    def _start(self, child: Child, *, stdin: bool = False) -> None:
        env = dict(os.environ)
        env[STACK_SECRET_ENV] = self.secret
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stderr = child.log_path.open("a", encoding="utf-8")
        try:
            port = [] if stdin else ["--port", str(child.port)]
            child.proc = subprocess.Popen(
                [*child.args, *port],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=env,
                text=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe work
            )
        finally:
            stderr.close()
        child.started_at = time.monotonic()
        child.status = "starting"
        child.restart_at = None
        self.by_pid[child.proc.pid] = child
        threading.Thread(target=self._follow, args=(child.proc,), daemon=True).start()

    def _follow(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.announcements.put((proc.pid, event))
        proc.wait()
        proc.stdout.close()
        self.exits.put(proc.pid)

    def _handle_announcement(self, pid: int, event: dict[str, Any]) -> None:
        child = self.by_pid.get(pid)
        if child is None:
            return
        kind = event.get("event")
        if kind == "listening":
            child.port = int(event["port"])
            child.status = "listening"
        elif kind == "ready":
            child.status = "ready"
        elif kind == "load_refused":
            child.status = "load_refused"
        elif kind == "device_lost":
            child.status = "device_lost"
        elif kind == "standby":
            child.status = "standby"
            self.standby_failures = 0
        child.announced[str(kind)] = event
        self.write_state()

    def _wait_for(self, children: list[Child], statuses: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(c.status in statuses for c in children):
            if self.stop.is_set():
                raise StackError("stopped while starting")
            self._drain_exits(starting=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiting = [c.name for c in children if c.status not in statuses]
                raise StackError(f"{', '.join(waiting)} did not reach {sorted(statuses)} in time")
            try:
                pid, event = self.announcements.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            self._handle_announcement(pid, event)

    def _drain_exits(self, *, starting: bool) -> None:
        while True:
            try:
                pid = self.exits.get_nowait()
            except queue.Empty:
                return
            child = self.by_pid.pop(pid, None)
            if child is None:
                continue
            if child is self.standby:
                self.standby = None
                self.standby_failures += 1
                code = child.proc.returncode if child.proc else None
                if self.stop.is_set():
                    continue
                if self.standby_failures >= _STANDBY_ATTEMPTS:
                    # Something stops it from ever getting ready: restarts go cold from now on.
                    log.error("standby worker failed %d times (last code %s); see %s",
                              self.standby_failures, code, child.log_path)  # fmt: skip
                    continue
                log.warning("the standby worker exited (code %s); warming another", code)
                self._warm_standby()
                continue
            self._on_exit(child, starting=starting)

    # lifecycle -----------------------------------------------------------------------------
    def up(self) -> None:
        if self.config.fault_hooks and self.token is None:
            raise StackError(
                f"fault_hooks is on: set ${self.config.admin_token_env} to the admin token"
            )
        for pool, pool_config in self.config.pools.items():
            for index in range(pool_config.replicas):
                name = f"{pool.value}-{index}"
                self.workers.append(
                    Child(
                        name=name,
                        args=self._worker_args(pool_config.model),
                        log_path=self.log_dir / f"{name}.log",
                        pool=pool,
                        index=index,
                        model=pool_config.model,
                        address=pool_config.address(index),
                    )
                )
        for worker in self.workers:
            self._spawn(worker)
        self._wait_for(self.workers, {"listening", "ready", "load_refused"}, timeout=60)
        replicas_path = self.state_path.with_name("replicas.json")
        replicas = [
            {"pool": w.pool.value if w.pool else "", "index": w.index, "model": w.model,
             "url": w.gateway_url}
            for w in self.workers
        ]  # fmt: skip
        write_atomically(replicas_path, json.dumps(replicas, indent=2) + "\n")
        self.gateway = Child(
            name="gateway",
            args=[
                sys.executable,
                "-m",
                "target_service",
                "gateway",
                "--config",
                str(self.config_path),
                "--replicas",
                str(replicas_path),
                "--admin-token-env",
                self.config.admin_token_env,
            ],
            log_path=self.log_dir / "gateway.log",
        )
        self._spawn(self.gateway)
        self._wait_for([self.gateway], {"listening", "ready"}, timeout=60)
        self._wait_for(self.workers, {"ready", "load_refused"}, timeout=300)
        self._wait_for([self.gateway], {"ready"}, timeout=60)
        # After the cold starts (it would only slow them down), and before announcing the stack
        # ready: a failure right after start-up must recover as fast as any other.
        self._warm_standby()
        assert self.standby is not None
        self._wait_for([self.standby], {"standby"}, timeout=120)
        self.write_state()

    def run(self) -> None:
        """Supervise until ``stop`` is set: restart exited children with capped backoff."""
        while not self.stop.is_set():
            try:
                pid, event = self.announcements.get(timeout=0.1)
                self._handle_announcement(pid, event)
            except queue.Empty:
                pass
            self._drain_exits(starting=False)
            now = time.monotonic()
            for child in self._children():
                if child.restart_at is not None and now >= child.restart_at:
                    self._restart(child, now)

    def _children(self) -> list[Child]:
        extra = [c for c in (self.gateway, self.standby) if c is not None]
        return [*self.workers, *extra]

    def _on_exit(self, child: Child, *, starting: bool) -> None:
        if self.stop.is_set() or child.proc is None:
            return
        code = child.proc.returncode
        child.exit_code = code
        child.status = "exited"
        if starting:
            raise StackError(
                f"{child.name} exited with code {code} while starting; see {child.log_path}"
            )
        ran = time.monotonic() - child.started_at
        restart = self.config.restart
        if ran >= restart.reset_after:
            child.backoff = 0.0
        child.backoff = (
            restart.initial_backoff
            if child.backoff == 0
            else min(child.backoff * 2, restart.max_backoff)
        )
        child.restart_at = time.monotonic() + child.backoff
        log.warning(
            "%s exited with code %s after %.1fs; restart in %.2fs",
            child.name,
            code,
            ran,
            child.backoff,
        )
        self._tell_gateway(
            EventKind.WORKER_EXITED,
            {
                **self._ident(child),
                "exit_code": code,
                "ran_s": round(ran, 3),
                "restart_in_s": child.backoff,
            },
        )
        self.write_state()

    def _restart(self, child: Child, now: float) -> None:
        assert child.restart_at is not None
        warming = self.standby is not None and self.standby.status == "starting"
        if child.pool is not None and warming and now - child.restart_at < _STANDBY_PATIENCE_S:
            # A cold start beside a warming standby slows both down on a small machine; the
            # standby is seconds from ready, so take it when it is.
            return
        child.restarts += 1
        self._spawn(child)
        self._tell_gateway(
            EventKind.WORKER_RESTARTED,
            {**self._ident(child), "restarts": child.restarts, "backoff_s": child.backoff},
        )
        self.write_state()

    def _ident(self, child: Child) -> dict[str, Any]:
        if child.pool is None:
            return {"component": child.name}
        return {"pool": child.pool.value, "index": child.index, "model": child.model}

    def _tell_gateway(self, kind: EventKind, details: dict[str, Any]) -> None:
        if self.gateway is None or self.gateway.port == 0:
            return
        try:
            httpx.post(
                f"{self.gateway.url}/internal/events",
                json={"kind": kind.value, "details": details},
                headers={STACK_SECRET_HEADER: self.secret},
                timeout=2,
            )
        except httpx.HTTPError as exc:
            log.warning("could not tell the gateway about %s: %s", kind.value, exc)

    def write_state(self) -> None:
        state = {
            "supervisor": {"pid": os.getpid(), "started": self.started},
            "config": str(self.config_path),
            "registry": str(self.registry),
            "gateway": self.gateway.describe() if self.gateway else None,
            "workers": [w.describe() for w in self.workers],
            "standby": self.standby.describe() if self.standby else None,
        }
        write_atomically(self.state_path, json.dumps(state, indent=2) + "\n")

    def down(self) -> None:
        """SIGTERM every child, SIGKILL what is left after a grace period; remove the state."""
        self.stop.set()
        children = [c.proc for c in self._children() if c.proc and c.proc.poll() is None]
        for proc in children:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for proc in children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.state_path.unlink(missing_ok=True)
        self.state_path.with_name("replicas.json").unlink(missing_ok=True)


def read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackError(f"no stack is running for {path} (no state file)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise StackError(f"{path}: unreadable state file: {exc}") from exc
    if not isinstance(data, dict):
        raise StackError(f"{path}: not a stack state file")
    return data


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return True
    return status != "Z"


def _is_ours(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"target_service" in cmdline


def stop_stack(path: Path, timeout: float = 15.0) -> list[str]:
    """Stop the stack a state file describes; returns what was stopped. Works when the
    supervisor itself is gone too (its children are then signalled directly)."""
    state = read_state(path)
    stopped: list[str] = []
    supervisor = state.get("supervisor", {}).get("pid")
    if pid_alive(supervisor) and _is_ours(supervisor):
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(supervisor) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)
        stopped.append(f"supervisor (pid {supervisor})")
    children = [state.get("gateway"), state.get("standby"), *state.get("workers", [])]
    for child in filter(None, children):
        pid = child.get("pid")
        if pid_alive(pid) and _is_ours(pid):
            os.kill(pid, signal.SIGKILL)
            stopped.append(f"{child.get('name')} (pid {pid})")
    path.unlink(missing_ok=True)
    path.with_name("replicas.json").unlink(missing_ok=True)
    return stopped


def run_supervisor(config: StackConfig, config_path: Path, state_path: Path, registry: Path) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s supervisor %(levelname)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    if state_path.exists():
        previous = read_state(state_path).get("supervisor", {}).get("pid")
        if pid_alive(previous) and _is_ours(previous):
            raise StackError(
                f"a stack is already running (supervisor pid {previous}); stack down first"
            )
        stop_stack(state_path)  # leftovers of a killed supervisor
    supervisor = Supervisor(config, config_path, state_path, registry)

    def on_signal(signum: int, _frame: Any) -> None:
        supervisor.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.up()
        gateway = supervisor.gateway
        assert gateway is not None
        print(
            json.dumps({"event": "stack_ready", "gateway": gateway.url, "state": str(state_path)}),
            flush=True,
        )
        print(f"stack up: gateway {gateway.url}; stop with Ctrl-C or `stack down`", file=sys.stderr)
        supervisor.run()
    except StackError as exc:
        if not supervisor.stop.is_set():
            raise
        log.info("%s", exc)
    finally:
        supervisor.down()
    return 0
