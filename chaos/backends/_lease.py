"""What a running target owns, on disk from the moment each thing exists, and the repair that
undoes what a killed run left: its processes, its proxies on a shared server, its containers
(on the engine they ran on), its damaged model files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos._errors import (
    BackendError,
    HarnessError,
)
from chaos._toxiproxy import (
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyUnavailable,
)
from chaos._wait import wait_until
from chaos.injectors import (
    process_cmdline,
    restore_leftovers,
)

from ._containers import sweep_run

_LEASE = "lease.json"


def state_dir() -> Path:
    """Where backups of corrupted files and the lease of a running experiment live."""
    return Path(os.environ.get("ICHAOS_STATE_DIR", ".ichaos/state"))


def toxiproxy_url() -> str:
    """A toxiproxy-server to share, if one answers here; else each run starts its own."""
    return os.environ.get("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:8474")


def registry_dir() -> Path:
    return Path(os.environ.get("ICHAOS_REGISTRY", ".ichaos/registry"))


def built_registry() -> Path:
    """The registry the reference stack serves from, absolute; refused when not built."""
    registry = registry_dir().resolve()
    if not (registry / "primary").is_dir():
        raise BackendError(
            f"no model registry at {registry}: run ./dev setup or `ichaos models build`"
        )
    return registry


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
                # A group leader (a service of a stack file) takes what it started with it.
                kill = os.killpg if entry.get("group") else os.kill
                with contextlib.suppress(ProcessLookupError):
                    kill(pid, signal.SIGTERM)
                    with contextlib.suppress(HarnessError):
                        wait_until(_gone(pid, marker), timeout=15)
                    if marker in process_cmdline(pid):
                        kill(pid, signal.SIGKILL)
                if entry.get("group"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)  # children it left behind, if any
                done.append(f"stopped {entry['what']} (pid {pid}) left by an earlier run")
                log(done[-1])
        unswept = []
        for entry in owned.get("docker", []):
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

    def hold(self, pid: int, marker: str, what: str, *, group: bool = False) -> None:
        """``group``: the process leads a process group of its own, stopped as a whole."""
        entry: dict[str, Any] = {"pid": pid, "marker": marker, "what": what}
        if group:
            entry["group"] = True
        self.processes.append(entry)
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
