"""The user's compose file as the system under test: its services run as containers on a
Docker-API engine by Docker Compose itself, each declared link and the client hop through a
Toxiproxy container of the run.

ichaos does not run the user's file as it is. It asks Compose for the file's resolved form
(``config``: interpolation, ``extends`` and ``env_file`` done), and writes the run's own
``compose.yaml`` beside the journal from it:

- every container, network and volume carries the run's labels (run, owner), so a run killed
  with SIGKILL is swept by the next one, as the docker backend's own containers are;
- a link ``{from: router, to: model}`` points the address ``model:PORT`` in the router's
  command, entrypoint and environment at the link's proxy; the proxies are in the Toxiproxy
  container's configuration from its first instant, so no request bypasses them;
- the ports the file publishes are dropped (fixed host ports collide and may face the network);
  the declared services' ports are published on 127.0.0.1 at ports the engine chooses;
- every service gets an init (``init: true``): a kill then reaches the service's own process
  and the container ends with its status, so its restart policy applies as it would under the
  OOM killer (an engine may not restart a container it killed through its API).

The project name is the run's, so two runs of one file never share anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from chaos._errors import ApplyError, BackendError, HarnessError
from chaos._stackfile import LoadedStack, address_pattern
from chaos._wait import wait_until
from chaos.injectors import ContainerInjector, Injector, SignalKind

from ._containers import (
    _API_PORT,
    _CLIENT_PORT,
    _FIRST_HOP_PORT,
    LABEL_OWNER,
    LABEL_ROLE,
    LABEL_RUN,
    _owner,
    connect,
    container_action,
    engine_url,
    exit_code,
    follow_run_events,
    published_port,
    sweep,
    toxiproxy_in,
)
from ._lease import _Lease
from ._stack import StackTarget
from .docker import ensure_image, toxiproxy_context

TOXIPROXY_SERVICE = "ichaos-toxiproxy"
LABEL_SERVICE = "io.ichaos.service"
_TICK = 0.2
_HEALTH_TIMEOUT = 1.0
_CONFIG_TIMEOUT_S = 60.0
_UP_TIMEOUT_S = 1800.0  # images with `build:` are built by `up`: torch is a large download
_DOWN_TIMEOUT_S = 300.0


def compose_command() -> list[str]:
    """Docker Compose as a command: ``docker compose`` (v2) where the docker CLI has it, else
    ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
            )
            if done.returncode == 0:
                return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise BackendError(
        "a stack file with `compose` needs Docker Compose: `docker compose` (v2, the docker "
        "CLI's plugin) or `docker-compose` (Debian: apt-get install docker-compose)"
    )


def rewrite_links(service: dict[str, Any], addresses: dict[re.Pattern[str], str]) -> int:
    """Every address of ``addresses`` in the service's command, entrypoint and environment
    replaced by its proxy's; how many places changed."""
    changed = 0

    def sub(text: str) -> str:
        nonlocal changed
        for pattern, proxy in addresses.items():
            text, count = pattern.subn(proxy, text)
            changed += count
        return text

    for key in ("command", "entrypoint"):
        value = service.get(key)
        if isinstance(value, str):
            service[key] = sub(value)
        elif isinstance(value, list):
            service[key] = [sub(str(v)) for v in value]
    env = service.get("environment")
    if isinstance(env, dict):
        service["environment"] = {k: None if v is None else sub(str(v)) for k, v in env.items()}
    elif isinstance(env, list):
        service["environment"] = [sub(str(v)) for v in env]
    return changed


def _bind_sources(service: dict[str, Any], base: Path) -> list[Path]:
    """The host directories bind-mounted into a resolved compose service."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind" and volume.get("source"):
                found.append(Path(str(volume["source"])))
        elif isinstance(volume, str) and ":" in volume:
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                found.append(Path(source).expanduser())
    return [p if p.is_absolute() else base / p for p in found]


class ComposeTarget(StackTarget):
    """A stack file's compose file as containers behind a Toxiproxy container."""

    honours = frozenset({"toxic", "partition", "stream", "process", "container", "model", "burst"})

    def __init__(self, stack: LoadedStack, run_dir: Path, *, log: Path | None = None) -> None:
        super().__init__(stack, run_dir)
        assert stack.compose is not None
        self.run_id = secrets.token_hex(4)
        self.project = f"ichaos-{self.run_id}"
        self._lease = _Lease(self.state)
        self._log: IO[str] | None = None
        self._dir = run_dir / "compose"
        self._file: Path | None = None  # the run's compose file, once written
        self._containers: dict[str, Any] = {}
        self._ready: dict[str, bool] = dict.fromkeys(stack.stack.services, False)
        self._started_at: dict[str, float] = {}
        self._starts: dict[str, int] = {}
        # Services whose exit the run asked the engine for, with when it asked (Unix time).
        self._planned: dict[str, float] = {}
        self._stopping = threading.Event()
        self._followers: list[Any] = []
        self._monitor: threading.Thread | None = None
        self.client = connect()
        try:
            self._lease.hold_docker(engine_url(), self.run_id)
            self._dir.mkdir(parents=True, exist_ok=True)
            if log is not None:
                self._log = log.open("a", encoding="utf-8")
            sweep(self.client, log=self._say)
            self._tool = compose_command()
            self._checksum_models()
            resolved = self._resolve(stack.compose)
            proxy_image = os.environ.get("ICHAOS_TOXIPROXY_IMAGE") or ensure_image(
                self.client, "ichaos-toxiproxy", toxiproxy_context(), "Dockerfile", self._log
            )
            self._file = self._write(resolved, proxy_image)
            self._compose(["up", "-d"], timeout=_UP_TIMEOUT_S)
            self._find_containers()
            self._toxiproxy_ready()
            self._follow_engine_events()
            self._first_ready()
            self._monitor = threading.Thread(target=self._watch, name="ichaos-compose",
                                             daemon=True)  # fmt: skip
            self._monitor.start()
        except BaseException as exc:
            try:
                self.stop()
            except BackendError as stopping:
                exc.add_note(f"and stopping what had started: {stopping}")
            raise

    # -- the run's compose file --------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text.rstrip("\n") + "\n")
            self._log.flush()

    def _env(self) -> dict[str, str]:
        # ICHAOS_REGISTRY: where a compose file finds the built-in models to mount.
        from chaos._stackfile import registry_path

        return {**os.environ, "ICHAOS_REGISTRY": str(registry_path())}

    def _compose(self, args: list[str], *, timeout: float, file: Path | None = None) -> str:
        """Run Compose on the run's file (or ``file``) and project; its output, or a
        BackendError with the end of what it said."""
        target = file or self._file
        assert target is not None
        assert self.stack.compose is not None
        # Paths the resolved file still has relative are the user's file's.
        home = self.stack.compose.parent
        argv = [*self._tool, "--project-directory", str(home), "-f", str(target),
                "-p", self.project, *args]  # fmt: skip
        self._say(f"$ {' '.join(argv)}")
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=self._env(),
                stdin=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BackendError(f"`{' '.join(args)}` of {target} did not end within "
                               f"{timeout:g}s") from exc  # fmt: skip
        except OSError as exc:
            raise BackendError(f"cannot run {argv[0]}: {exc}") from exc
        self._say(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-12:])
            raise BackendError(f"{' '.join(self._tool)} {args[0]} of {target} exited with "
                               f"{done.returncode}:\n    {tail}")  # fmt: skip
        return done.stdout

    def _resolve(self, compose: Path) -> dict[str, Any]:
        text = self._compose(["config"], timeout=_CONFIG_TIMEOUT_S, file=compose)
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
            raise BackendError(f"{compose}: Compose resolved it to no services")
        return data

    def _write(self, resolved: dict[str, Any], proxy_image: str) -> Path:
        """The run's compose file, from the user's resolved one (see the module's docstring)."""
        stack = self.stack.stack
        labels = {LABEL_RUN: self.run_id, LABEL_OWNER: _owner()}
        services: dict[str, Any] = resolved["services"]
        for name in stack.services:
            if name not in services:
                raise BackendError(f"{self.stack.compose}: Compose resolved no service {name!r}")
        proxies: list[dict[str, Any]] = []
        port = _FIRST_HOP_PORT
        sources: dict[str, dict[re.Pattern[str], str]] = {}
        for link in stack.links:
            dest = stack.services[link.to]
            assert dest.port is not None  # the stack file's checks
            proxies.append({"name": f"{link.from_}-to-{link.to}", "listen": f"0.0.0.0:{port}",
                            "upstream": f"{link.to}:{dest.port}", "enabled": True})  # fmt: skip
            self.hops[link.hop] = proxies[-1]["name"]
            sources.setdefault(link.from_, {})[address_pattern(link.to, dest.port)] = (
                f"{TOXIPROXY_SERVICE}:{port}"
            )
            port += 1
        entry = stack.services[stack.entry_service]
        upstream = f"{stack.entry_service}:{entry.port}"
        proxies.append({"name": "client", "listen": f"0.0.0.0:{_CLIENT_PORT}",
                        "upstream": upstream, "enabled": True})  # fmt: skip
        self.hops["client"] = "client"
        for name, service in services.items():
            if not isinstance(service, dict):
                raise BackendError(f"{self.stack.compose}: service {name} is not a mapping")
            declared = stack.services.get(name)
            service.pop("ports", None)
            if declared is not None:
                service["ports"] = [f"127.0.0.1::{declared.port}"]
            service["labels"] = {**_mapping(service.get("labels")), **labels,
                                 LABEL_ROLE: "service", LABEL_SERVICE: name}  # fmt: skip
            service["init"] = True
            if name in sources:
                if rewrite_links(service, sources[name]) == 0:
                    raise BackendError(f"{name}: Compose resolved its command and environment "
                                       "to no address of a service it links to")  # fmt: skip
                service["depends_on"] = _depends(service.get("depends_on"), TOXIPROXY_SERVICE)
            folder = self.stack.model_dir(name) if declared is not None else None
            if folder is not None and not any(
                s.resolve() == folder.resolve() for s in _bind_sources(service, self.stack.base)
            ):
                raise BackendError(f"service {name}: its model_dir {folder} is not bind-mounted "
                                   "into it by the compose file, so a model fault could not "
                                   "reach what it loads")  # fmt: skip
        config = self._dir / "toxiproxy.json"
        config.write_text(json.dumps(proxies, indent=1))
        services[TOXIPROXY_SERVICE] = {
            "image": proxy_image,
            "command": ["-host=0.0.0.0", f"-port={_API_PORT}", "-config=/config/toxiproxy.json"],
            "volumes": [f"{config.resolve()}:/config/toxiproxy.json:ro"],
            "ports": [f"127.0.0.1::{_API_PORT}", f"127.0.0.1::{_CLIENT_PORT}"],
            "labels": {**labels, LABEL_ROLE: "toxiproxy"},
            "restart": "always",
        }
        resolved.pop("version", None)  # the Compose specification; `init` needs no version
        # Compose v2 writes the project's name, and names its networks and volumes after it
        # (`stack_default`), into the resolved file: kept, they would be the user's own
        # project's, shared by every run. The run's project name (-p) names them instead.
        project = resolved.pop("name", None)
        resolved["networks"] = _labelled(resolved.get("networks"), labels, project, "default")
        if resolved.get("volumes"):
            resolved["volumes"] = _labelled(resolved["volumes"], labels, project)
        out = self._dir / "compose.yaml"
        out.write_text(
            f"# Written by ichaos for run {self.run_id} from {self.stack.compose}\n"
            + yaml.safe_dump(resolved, sort_keys=False)
        )
        return out

    # -- up ----------------------------------------------------------------------------------

    def _find_containers(self) -> None:
        found = self.client.containers.list(
            all=True, filters={"label": [f"{LABEL_RUN}={self.run_id}"]}
        )
        for container in found:
            labels = container.labels or {}
            if labels.get(LABEL_ROLE) == "toxiproxy":
                self._containers[TOXIPROXY_SERVICE] = container
            elif labels.get(LABEL_SERVICE):
                self._containers[labels[LABEL_SERVICE]] = container
        missing = [n for n in (*self.stack.stack.services, TOXIPROXY_SERVICE)
                   if n not in self._containers]  # fmt: skip
        if missing:
            raise BackendError(f"Compose started no container for {', '.join(missing)}")
        now = time.monotonic()
        for name in self.stack.stack.services:
            self._starts[name], self._started_at[name] = 1, now
            self._event("service_started", service=name, container=self._containers[name].name,
                        start=1)  # fmt: skip

    def _published(self, name: str, port: int) -> int:
        return published_port(self._containers[name], port)

    def _toxiproxy_ready(self) -> None:
        client = self.toxiproxy = toxiproxy_in(self._containers[TOXIPROXY_SERVICE])
        names = set(client.proxies())
        missing = sorted(set(self.hops.values()) - names)
        if missing:
            raise BackendError(f"toxiproxy started without the proxies {missing}")
        self.url = f"http://127.0.0.1:{self._published(TOXIPROXY_SERVICE, _CLIENT_PORT)}"

    def _first_ready(self) -> None:
        """Every declared service healthy, each within its own start timeout."""
        for name, spec in self.stack.stack.services.items():
            left = spec.start_timeout - (time.monotonic() - self._started_at[name])
            try:
                wait_until(self._health_check(name), timeout=max(left, 1.0), interval=0.25,
                           message=f"{name} healthy")  # fmt: skip
            except HarnessError as exc:
                logs = self._containers[name].logs(tail=15).decode(errors="replace").strip()
                raise BackendError(
                    f"service {name} did not answer 2xx at {spec.health} within "
                    f"{spec.start_timeout:g}s of `up` (its container's last lines):\n    "
                    + "\n    ".join(logs.splitlines())
                ) from exc
            self._became_ready(name)
        self.direct_url = self.service_url(self.stack.stack.entry_service)

    def _health_check(self, name: str) -> Callable[[], bool]:
        return lambda: self._healthy(name)

    def _healthy(self, name: str) -> bool:
        spec = self.stack.stack.services[name]
        try:
            answer = httpx.get(f"{self.service_url(name)}{spec.health}", timeout=_HEALTH_TIMEOUT)
        except (httpx.HTTPError, BackendError):
            return False
        return answer.is_success

    def _became_ready(self, name: str) -> None:
        with self._lock:
            self._ready[name] = True
            after = round(time.monotonic() - self._started_at[name], 3)
        self._event("service_ready", service=name, container=self._containers[name].name,
                    after=after)  # fmt: skip

    # -- watching ----------------------------------------------------------------------------

    def _follow_engine_events(self) -> None:
        self._followers.append(follow_run_events(self.client, self.run_id, self._relay))

    def _relay(self, action: str, attributes: dict[str, str], when: float) -> None:
        name = attributes.get(LABEL_SERVICE)
        if name not in self._ready:
            return
        if action == "die":
            code = exit_code(attributes)
            with self._lock:
                # Planned only if it died after the run asked: a start failing on its own
                # just before a restart was asked for (its event relayed after the asking)
                # is the service's exit, and the restart's own exit, which follows, the
                # planned one.
                asked = self._planned.get(name)
                planned = asked is not None and when >= asked
                if planned:
                    del self._planned[name]
                self._ready[name] = False
            # A container's status 128+N is its process's death by signal N (the init's
            # convention), as a process's -N is: `signal` says it either way.
            signal = code - 128 if code is not None and 128 < code < 160 else None
            self._event("service_exited", service=name, code=code, signal=signal,
                        planned=planned)  # fmt: skip
        elif action == "start":
            with self._lock:
                self._starts[name] = self._starts.get(name, 0) + 1
                self._started_at[name] = time.monotonic()
                self._ready[name] = False
                start = self._starts[name]
            if start > 1:
                self._event("service_started", service=name, start=start)

    def _watch(self) -> None:
        """Services started again (by their restart policy or a fault) are ready once their
        health answers 2xx."""
        while not self._stopping.wait(_TICK):
            for name in list(self._ready):
                with self._lock:
                    waiting = not self._ready[name] and self._starts.get(name, 0) > 1
                if waiting and not self._stopping.is_set() and self._healthy(name):
                    self._became_ready(name)

    # -- what faults need --------------------------------------------------------------------

    def service_url(self, name: str) -> str:
        port = self.stack.stack.services[name].port
        assert port is not None
        return f"http://127.0.0.1:{self._published(name, port)}"

    def service_signal(self, name: str, kind: SignalKind) -> Injector:
        container = self._containers.get(name)
        if container is None:
            raise ApplyError(f"the stack has no service {name!r}")
        return ContainerInjector([container], kind, f"service {name}")

    def container_fault(self, keys: list[str], action: str, label: str) -> Injector:
        missing = [k for k in keys if k not in self._containers or k == TOXIPROXY_SERVICE]
        if missing:
            raise ApplyError(f"the stack has no service {', '.join(missing)}")
        timeout = {k: int(self.stack.stack.services[k].stop_timeout) for k in keys}

        def networks(container: Any) -> list[Any]:
            container.reload()
            names = container.attrs["NetworkSettings"].get("Networks") or {}
            return [self.client.networks.get(n) for n in names]

        def aliases(container: Any) -> list[str]:
            return [(container.labels or {}).get(LABEL_SERVICE, "")]

        if action in ("stop", "restart"):
            with self._lock:  # an exit the run asked the engine for: planned
                self._planned.update(dict.fromkeys(keys, time.time()))
        return container_action(
            [self._containers[k] for k in keys], action, label, networks=networks,
            aliases=aliases, timeout=max(timeout.values()),
        )  # fmt: skip

    def restart_service(self, name: str) -> None:
        container = self._containers[name]
        with self._lock:
            self._planned[name] = time.time()
        timeout = int(self.stack.stack.services[name].stop_timeout)
        try:
            container.restart(timeout=timeout)
        except Exception as exc:
            raise ApplyError(f"restarting {container.name}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "docker", "engine": engine_url(), "run": self.run_id,
            "stack": str(self.stack.path), "compose": str(self.stack.compose),
            "compose_file": str(self._file), "url": self.url,
            "entry": self.stack.stack.entry_service,
            "toxiproxy": self.toxiproxy.url if self.toxiproxy else None, "hops": dict(self.hops),
            "containers": {n: c.name for n, c in self._containers.items()},
        }  # fmt: skip

    # -- stopping ----------------------------------------------------------------------------

    def stop(self) -> None:
        errors: list[str] = []
        self._stopping.set()
        for stream in self._followers:
            with contextlib.suppress(Exception):
                stream.close()
        self._followers.clear()
        if self._monitor is not None:
            self._monitor.join(timeout=10)
            self._monitor = None
        logs = self._dir / "logs"
        for name, container in list(self._containers.items()):
            with contextlib.suppress(Exception):
                logs.mkdir(parents=True, exist_ok=True)
                (logs / f"{name}.log").write_bytes(container.logs(stdout=True, stderr=True))
        self._containers.clear()
        if self.toxiproxy is not None:
            self.toxiproxy.close()
            self.toxiproxy = None
        if self._file is not None:
            longest = max(int(s.stop_timeout) for s in self.stack.stack.services.values())
            try:
                self._compose(["down", "-v", "--remove-orphans", "-t", str(longest)],
                              timeout=_DOWN_TIMEOUT_S)  # fmt: skip
            except BackendError as exc:  # the sweep below removes what it could not
                self._say(f"compose down failed: {exc}")
        try:
            sweep(self.client, run=self.run_id, log=lambda _m: None)
        except Exception as exc:
            errors.append(f"removing run {self.run_id}'s containers: {exc}")
        else:
            self._lease.release()
        errors += self._model_dir_problems()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.client.close()
        if errors:
            raise BackendError("; ".join(errors))


def _mapping(value: Any) -> dict[str, str]:
    """Labels as a mapping, whether the file wrote a mapping or ``KEY=value`` lines."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(v).partition("=")[::2] for v in value)
    return {}


def _labelled(
    section: Any, labels: dict[str, str], project: Any, also: str | None = None
) -> dict[str, Any]:
    """A file's networks or volumes, each one the run creates carrying the run's labels and
    named by the run's project (an external one is the user's, and left alone); ``also``
    added where it is missing. ``project``: the name Compose resolved the file under."""
    entries: dict[str, Any] = dict(section or {})
    if also is not None:
        entries.setdefault(also, {})
    for key, entry in entries.items():
        options = dict(entry or {})
        if not options.get("external"):
            options["labels"] = {**_mapping(options.get("labels")), **labels}
            if project is not None and options.get("name") == f"{project}_{key}":
                del options["name"]
        entries[key] = options
    return entries


def _depends(value: Any, service: str) -> Any:
    """``depends_on`` with ``service`` added, in the form the file used."""
    if isinstance(value, dict):
        return {**value, service: {"condition": "service_started"}}
    return [*(value or []), service]
