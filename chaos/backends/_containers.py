"""The Docker-API engine: connecting to it, the labels on everything a run creates, and the
sweep of what a killed run left there (by its lease, or by an owner that is gone)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos._errors import ApplyError, BackendError, EngineUnavailable
from chaos._toxiproxy import ToxiproxyClient, ToxiproxyUnavailable
from chaos._wait import wait_until
from chaos.injectors import (
    ContainerRestartInjector,
    ContainerStopInjector,
    DisconnectInjector,
    Injector,
    InjectorGroup,
    process_stat,
)

LABEL_RUN = "io.ichaos.run"
LABEL_OWNER = "io.ichaos.owner"  # "host:pid" of the harness that created it
LABEL_ROLE = "io.ichaos.role"
DEFAULT_BASE_IMAGE = "python:3.11-slim-bookworm"
_SERVICE_PORT = 8000
_CLIENT_PORT = 8080
_API_PORT = 8474
_FIRST_HOP_PORT = 9000
_STACK_SECRET_ENV = "ICHAOS_STACK_SECRET"  # the gateway's, for events from outside it
_READY_TIMEOUT_S = 180.0
_SIGNAL_SETTLE_S = 10.0  # how long a signalled service process may take to end
_API_VERSION = "1.41"  # four workers importing torch at once on a small machine


def engine_url() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


HOW_TO_GET_AN_ENGINE = (
    "start Docker, or (Debian, as root) run `deploy/podman-engine.sh start` and export the "
    "DOCKER_HOST and ICHAOS_BASE_IMAGE it prints"
)


def _client(engine: str | None = None) -> Any:
    """A Docker SDK client for ``engine`` (default: ``DOCKER_HOST``), checked to answer."""
    import docker
    import requests

    engine = engine or engine_url()
    if engine.startswith("unix://"):
        # Tried first by hand: the SDK leaks the socket of a connection that fails.
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(engine.removeprefix("unix://"))
            except OSError as exc:
                raise docker.errors.DockerException(f"cannot connect: {exc.strerror}") from exc
    # A fixed API version: negotiating one would contact the engine inside the constructor,
    # where a failure leaks the connection. 1.41 is what podman serves; Docker accepts it.
    client = docker.DockerClient(base_url=engine, version=_API_VERSION, timeout=300)
    try:
        client.ping()
    except requests.RequestException as exc:
        client.close()
        raise docker.errors.DockerException(str(exc)) from exc
    except BaseException:
        client.close()
        raise
    return client


def connect() -> Any:
    """A client for the engine at ``DOCKER_HOST``; no engine is a clear error."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - the [docker] extra is part of ./dev setup
        raise BackendError("the docker backend needs the [docker] extra (the docker SDK)") from exc
    try:
        return _client()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"no Docker API answers at {engine_url()} ({exc}): {HOW_TO_GET_AN_ENGINE}"
        ) from exc


def _engine_message(exc: Exception) -> str:
    """What the engine said, without the SDK's request line around it."""
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc).strip()


def _start_time(pid: int | str) -> str:
    """The process's start time in clock ticks since boot ('' when it is gone): with the pid,
    it tells a process from a later one that got the same pid."""
    fields = process_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    try:
        return str(Path("/proc/self/ns/pid").stat().st_ino)
    except OSError:
        return ""


def _owner() -> str:
    """Who created a resource: host, pid namespace, pid and start time of this harness."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{_pid_namespace()}:{pid}:{_start_time(pid)}"


def _owner_alive(owner: str) -> bool:
    """False only when the owner was a process of this host's pid namespace that is gone."""
    parts = owner.split(":")
    if len(parts) != 4:
        return True  # not written by this version: not ours to judge
    host, namespace, pid, started = parts
    if host != socket.gethostname() or namespace != _pid_namespace() or not pid.isdigit():
        return True  # another machine's or another container's harness
    return _start_time(pid) == started


def published_port(container: Any, port: int) -> int:
    """The host port the engine publishes ``port`` of ``container`` on, read now: an engine
    may publish a restarted container on another port."""
    container.reload()
    bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []
    if not bindings:
        raise BackendError(f"{container.name}: port {port} is not published (not running?)")
    return int(bindings[0]["HostPort"])


def toxiproxy_in(container: Any) -> ToxiproxyClient:
    """A client of the Toxiproxy API in ``container``, once it answers."""
    client = ToxiproxyClient(f"http://127.0.0.1:{published_port(container, _API_PORT)}")

    def answers() -> bool:
        try:
            client.version()
        except ToxiproxyUnavailable:
            return False
        return True

    wait_until(answers, timeout=30, interval=0.2, message="toxiproxy's API in its container")
    return client


# (action, attributes, when): ``when`` is the engine's Unix time of the event.
ContainerEvent = Callable[[str, dict[str, str], float], None]


def follow_run_events(client: Any, run: str, on_event: ContainerEvent) -> Any:
    """The engine's container events of ``run``, each given to ``on_event(action,
    attributes, when)`` on a thread of its own; the stream is returned (closing it ends the
    thread). ``start`` is the action of every start (podman also says ``restart``)."""
    # One label only: podman matches events with any of several labels, Docker with all.
    stream = client.events(
        decode=True, filters={"label": [f"{LABEL_RUN}={run}"], "type": ["container"]}
    )

    # podman's stream can deliver again events it had already delivered, and older ones (seen
    # when its events log rotates): each is passed on once, and none from before the stream
    # was opened, as a live stream would.
    since = time.time()
    seen: set[tuple[str, str, object]] = set()

    def relay() -> None:
        with contextlib.suppress(Exception):  # the stream closes at the target's stop
            for event in stream:
                action = str(event.get("Action") or event.get("status") or "")
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if attributes.get(LABEL_RUN) != run:
                    continue
                when = event_time(event)
                key = (str(event.get("id") or (event.get("Actor") or {}).get("ID")), action,
                       event.get("timeNano") or event.get("time"))  # fmt: skip
                if when < since or key in seen:
                    continue
                seen.add(key)
                on_event(action, attributes, when)

    threading.Thread(target=relay, name=f"ichaos-events-{run}", daemon=True).start()
    return stream


def event_time(event: dict[str, Any]) -> float:
    """When the engine says an event happened (Unix seconds). ``timeNano`` where given; a
    whole-second ``time`` is read as the end of its second, the latest the event can have been;
    now where the engine said neither."""
    nano = event.get("timeNano")
    if isinstance(nano, int) and nano > 0:
        return nano / 1e9
    seconds = event.get("time")
    if isinstance(seconds, int | float) and seconds > 0:
        return float(seconds) + 0.999
    return time.time()


def exit_code(attributes: dict[str, str]) -> int | None:
    """A ``die`` event's exit status (None where the engine did not say)."""
    text = str(attributes.get("exitCode", attributes.get("containerExitCode")))
    return int(text) if text.lstrip("-").isdigit() else None


def container_action(
    containers: list[Any], action: str, label: str, *,
    networks: Callable[[Any], list[Any]], aliases: Callable[[Any], list[str] | None] | None = None,
    timeout: int = 10,
) -> Injector:  # fmt: skip
    """The injector of a ``kind: container`` fault's ``action`` on ``containers``:
    ``networks(c)`` are the networks a disconnect takes ``c`` off, ``aliases(c)`` the names it
    is connected again under; ``timeout``: how long a stop or restart waits before SIGKILL."""
    if action == "stop":
        return ContainerStopInjector(containers, label, timeout)
    if action == "restart":
        return ContainerRestartInjector(containers, label, timeout)
    if action == "disconnect":
        parts: list[Injector] = []
        for container in containers:
            names = None if aliases is None else aliases(container)
            parts += [DisconnectInjector(network, [container], label, aliases=names)
                      for network in networks(container)]  # fmt: skip
        return InjectorGroup(f"disconnect of {label}", parts)
    raise ApplyError(f"unknown container action {action!r}")


def sweep(client: Any, *, run: str | None = None, log: Any = print) -> list[str]:
    """Remove the containers, networks and volumes of ``run``, or, without one, of every run whose
    harness process on this host is gone. Returns what was removed."""
    import docker

    def wanted(labels: dict[str, str]) -> bool:
        if LABEL_RUN not in labels:
            return False
        if run is not None:
            return labels[LABEL_RUN] == run
        return not _owner_alive(labels.get(LABEL_OWNER, ""))

    removed: list[str] = []
    filters = {"label": [LABEL_RUN] if run is None else [f"{LABEL_RUN}={run}"]}
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        if wanted(container.labels):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed.append(f"container {container.name}")
    for network in client.networks.list(filters=filters):
        if wanted(network.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound):
                network.remove()
            removed.append(f"network {network.name}")
    for volume in client.volumes.list(filters=filters):  # a compose file's named volumes
        if wanted(volume.attrs.get("Labels") or {}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                volume.remove(force=True)
            removed.append(f"volume {volume.name}")
    for what in removed:
        log(f"removed {what} left by an earlier run")
    return removed


def sweep_run(engine: str, run: str, *, log: Any = print) -> list[str] | None:
    """What :func:`sweep` does for one run recorded in a lease, on the engine it ran on; None
    when the engine cannot be reached (the run is still to be swept)."""
    import docker

    try:
        client = _client(engine)
    except docker.errors.DockerException as exc:
        log(f"could not reach {engine} to remove run {run}'s containers (kept for later): {exc}")
        return None
    try:
        return sweep(client, run=run, log=log)
    finally:
        client.close()


# -- images ----------------------------------------------------------------------------------
