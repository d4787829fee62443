"""The docker backend: the reference stack and Toxiproxy as containers on a Docker-API engine.

One private network per run holds a Toxiproxy container, one container per worker replica and the
gateway. The gateway reaches each worker through its own proxy (by container name, so a restarted
worker is found again whatever its address), clients reach the gateway through the ``client``
proxy, published on 127.0.0.1 only. Faults map onto the engine: kill and terminate are signals to
the container (its restart policy brings it back, and the engine's events become the gateway's
``worker_exited``/``worker_restarted`` events, as the local supervisor reports them), pause is a
container pause, a network partition can also be a disconnect from the network; GPU hooks and
model corruption use the same admin API and the same registry (mounted into every worker) as the
local backend.

Everything created is labelled with the run and its owner (host and pid), removed at the end,
and swept by the next run when a harness was killed before it could clean up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import tarfile
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from chaos._errors import ApplyError, BackendError, EngineBroken, EngineUnavailable
from chaos._toxiproxy import (
    find_server_binary,
)
from chaos._wait import wait_until
from chaos.injectors import (
    ContainerInjector,
    DisconnectInjector,
    Injector,
    SignalKind,
)
from target_service import (
    STACK_SECRET_HEADER,
)

from ._containers import (
    _API_PORT,
    _CLIENT_PORT,
    _FIRST_HOP_PORT,
    _READY_TIMEOUT_S,
    _SERVICE_PORT,
    _STACK_SECRET_ENV,
    DEFAULT_BASE_IMAGE,
    LABEL_OWNER,
    LABEL_ROLE,
    LABEL_RUN,
    _engine_message,
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
from ._lease import _Lease, built_registry
from ._target import REFERENCE_FAULTS, Replica, ReplicaRef, Target


def project_root() -> Path:
    """The source checkout the service image is built from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "deploy" / "Dockerfile").is_file() or not (root / "pyproject.toml").is_file():
        raise BackendError(
            f"the docker backend builds its image from a source checkout, and {root} is not one: "
            "build deploy/Dockerfile yourself and set ICHAOS_SERVICE_IMAGE to its tag"
        )
    return root


def _ca_bundle() -> Path | None:
    """CA certificates the image build must trust (a TLS-intercepting proxy's): what the host's
    pip or requests is told to trust, unless ICHAOS_BUILD_CA_BUNDLE says otherwise ('' for none)."""
    inherited = (os.environ.get(v) for v in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"))
    chosen = os.environ.get("ICHAOS_BUILD_CA_BUNDLE", next((v for v in inherited if v), ""))
    if not chosen:
        return None
    path = Path(chosen)
    if not path.is_file():
        raise BackendError(
            f"CA bundle {path} (from ICHAOS_BUILD_CA_BUNDLE, PIP_CERT, REQUESTS_CA_BUNDLE or "
            "SSL_CERT_FILE): no such file"
        )
    return path


def _context(files: dict[str, Path]) -> tuple[bytes, str]:
    """A build context as an in-memory tar (sorted, no timestamps) and its digest."""
    digest = hashlib.sha256()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            data = files[name].read_bytes()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), files[name].stat().st_mode & 0o755 | 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), digest.hexdigest()[:16]


def service_context() -> tuple[bytes, str]:
    root = project_root()
    files = {name: root / name for name in ("pyproject.toml", "README.md", "deploy/Dockerfile")}
    for package in ("target_service", "chaos", "slo"):
        for path in (root / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[path.relative_to(root).as_posix()] = path
    files["deploy/ca/README"] = root / "deploy" / "ca" / "README"
    bundle = _ca_bundle()
    if bundle is not None:
        files["deploy/ca/bundle.pem"] = bundle
    return _context(files)


def toxiproxy_context() -> tuple[bytes, str]:
    server = find_server_binary()
    cli = server.with_name("toxiproxy-cli")
    if not cli.is_file():
        raise BackendError(f"no toxiproxy-cli beside {server}: run ./dev setup")
    dockerfile = Path(__file__).resolve().parents[2] / "deploy" / "toxiproxy.Dockerfile"
    if not dockerfile.is_file():
        raise BackendError(f"{dockerfile}: missing; set ICHAOS_TOXIPROXY_IMAGE to an image")
    return _context({"Dockerfile": dockerfile, "toxiproxy-server": server, "toxiproxy-cli": cli})


def base_image() -> str:
    return os.environ.get("ICHAOS_BASE_IMAGE", DEFAULT_BASE_IMAGE)


def ensure_image(
    client: Any, repo: str, context: tuple[bytes, str], dockerfile: str, log: IO[str] | None
) -> str:
    """Build ``repo:<digest of context and base>`` unless the engine has it already; its tag."""
    import docker

    data, digest = context
    base = base_image()
    tag = f"{repo}:{hashlib.sha256(f'{digest}:{base}'.encode()).hexdigest()[:16]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    say = log.write if log is not None else (lambda _text: 0)
    say(f"building {tag} from {base}\n")
    errors: list[str] = []
    try:
        stream = client.api.build(
            fileobj=io.BytesIO(data), custom_context=True, tag=tag, dockerfile=dockerfile,
            buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True, pull=False, decode=True,
        )  # fmt: skip
        for chunk in stream:
            if "stream" in chunk:
                say(str(chunk["stream"]))
            if "error" in chunk:
                errors.append(str(chunk["error"]).strip())
    except docker.errors.APIError as exc:
        errors.append(str(exc))
    if errors:
        raise BackendError(f"building {tag} failed: {errors[-1]}")
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound as exc:
        raise BackendError(f"building {tag} ended without the image") from exc
    return tag


# -- the target -----------------------------------------------------------------------------


class DockerTarget(Target):
    """The reference stack as containers behind a Toxiproxy container."""

    honours = REFERENCE_FAULTS | {"container"}

    def __init__(self, stack_file: Path | None, run_dir: Path, *, log: Path | None = None) -> None:
        super().__init__()
        from target_service import default_stack_file, load_stack_config, worker_options

        self.registry = built_registry()
        config = load_stack_config(stack_file or default_stack_file())
        self.run_id = secrets.token_hex(4)
        self._lease = _Lease(self.state)
        self.client = connect()
        self._log: IO[str] | None = None
        self._run_dir = run_dir
        self._containers: dict[str, Any] = {}  # key: "toxiproxy", "gateway", "primary[0]", ...
        self._replica_refs: list[ReplicaRef] = []
        self._names: dict[str, str] = {}
        self._network: Any = None
        self._followers: list[Any] = []
        self._stack_secret = secrets.token_hex(16)
        self._starts: dict[str, int] = {}
        try:
            self._lease.hold_docker(engine_url(), self.run_id)
            if log is not None:
                self._log = log.open("a", encoding="utf-8")
            sweep(self.client, log=self._say)
            service = os.environ.get("ICHAOS_SERVICE_IMAGE") or ensure_image(
                self.client, "ichaos-service", service_context(), "deploy/Dockerfile", self._log
            )
            proxy_image = os.environ.get("ICHAOS_TOXIPROXY_IMAGE") or ensure_image(
                self.client, "ichaos-toxiproxy", toxiproxy_context(), "Dockerfile", self._log
            )
            labels = {LABEL_RUN: self.run_id, LABEL_OWNER: _owner()}
            self._labels = labels
            self._network = self.client.networks.create(
                f"ichaos-{self.run_id}", driver="bridge", labels=labels
            )
            self._start_toxiproxy(proxy_image)
            self.admin_token = secrets.token_urlsafe(16)
            env = {config.admin_token_env: self.admin_token}
            replicas, hop_port = [], _FIRST_HOP_PORT
            for pool_name, pool in config.pools.items():
                for index in range(pool.replicas):
                    ref = ReplicaRef(pool_name.value, index)
                    self._replica_refs.append(ref)
                    key = str(ref)
                    name = self._name(f"{pool_name.value}-{index}")
                    self._run(
                        key, service, name, role="worker", environment=env,
                        command=[
                            "worker", "--model", pool.model, "--registry", "/models",
                            "--host", "0.0.0.0", "--port", str(_SERVICE_PORT),
                            *worker_options(config),
                        ],
                        volumes={str(self.registry): {"bind": "/models", "mode": "rw"}},
                        extra_labels={"io.ichaos.pool": pool_name.value,
                                      "io.ichaos.index": str(index)},
                    )  # fmt: skip
                    self._hop(key, f"{pool_name.value}-{index}", hop_port, name)
                    replicas.append({
                        "pool": pool_name.value, "index": index, "model": pool.model,
                        "url": f"http://{self._names['toxiproxy']}:{hop_port}",
                    })  # fmt: skip
                    hop_port += 1
            self._start_gateway(service, config, replicas, env)
            self._follow_engine_events()
            wait_until(
                self._all_ready, timeout=_READY_TIMEOUT_S, interval=0.5,
                message="every replica ready at the gateway",
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    # -- starting ----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self._log is not None:
            self._log.write(text.rstrip("\n") + "\n")
            self._log.flush()

    def _name(self, role: str) -> str:
        return f"ichaos-{self.run_id}-{role}"

    def _run(
        self, key: str, image: str, name: str, *, role: str, command: list[str],
        ports: tuple[int, ...] = (_SERVICE_PORT,), extra_labels: dict[str, str] | None = None,
        **options: Any,
    ) -> Any:  # fmt: skip
        import docker

        # Published on loopback only, on ports the engine chooses.
        try:
            container = self.client.containers.run(
                image, command, name=name, detach=True, network=self._network.name,
                labels={**self._labels, LABEL_ROLE: role, **(extra_labels or {})},
                ports={f"{port}/tcp": ("127.0.0.1", None) for port in ports},
                restart_policy={"Name": "always"}, **options,
            )  # fmt: skip
        except docker.errors.APIError as exc:
            raise BackendError(
                f"{name}: the engine at {engine_url()} could not start it: {_engine_message(exc)}"
            ) from exc
        self._containers[key], self._names[key] = container, name
        self._starts[name] = 1
        return container

    def _published(self, key: str, port: int) -> int:
        return published_port(self._containers[key], port)

    def _start_toxiproxy(self, image: str) -> None:
        name = self._name("toxiproxy")
        self._names["toxiproxy"] = name
        self._run(
            "toxiproxy", image, name, role="toxiproxy",
            command=["-host=0.0.0.0", f"-port={_API_PORT}"], ports=(_API_PORT, _CLIENT_PORT),
        )  # fmt: skip
        self.toxiproxy = toxiproxy_in(self._containers["toxiproxy"])

    def _hop(self, hop: str, name: str, port: int, upstream: str) -> None:
        """A proxy listening on ``port`` inside the Toxiproxy container, to ``upstream``."""
        assert self.toxiproxy is not None
        self.toxiproxy.create_proxy(name, f"{upstream}:{_SERVICE_PORT}", listen=f"0.0.0.0:{port}")
        self.hops[hop] = name

    def _start_gateway(
        self, image: str, config: Any, replicas: list[dict[str, Any]], env: dict[str, str]
    ) -> None:
        files = self._run_dir / "docker"
        files.mkdir(parents=True, exist_ok=True)
        self.config_path = files / "stack.yaml"
        data = config.model_dump(mode="json", exclude={"registry"})
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        (files / "replicas.json").write_text(json.dumps(replicas, indent=2))
        name = self._name("gateway")
        self._run(
            "gateway", image, name, role="gateway",
            environment={**env, _STACK_SECRET_ENV: self._stack_secret},
            command=[
                "gateway", "--config", "/etc/ichaos/stack.yaml",
                "--replicas", "/etc/ichaos/replicas.json", "--host", "0.0.0.0",
                "--port", str(_SERVICE_PORT), "--admin-token-env", config.admin_token_env,
            ],
            volumes={str(files.resolve()): {"bind": "/etc/ichaos", "mode": "ro"}},
        )  # fmt: skip
        self.direct_url = self._gateway_url()
        self._hop("client", "client", _CLIENT_PORT, name)
        self.url = f"http://127.0.0.1:{self._published('toxiproxy', _CLIENT_PORT)}"

    def _gateway_url(self) -> str:
        """Looked up each time: Docker may publish a restarted container on another port."""
        self.direct_url = f"http://127.0.0.1:{self._published('gateway', _SERVICE_PORT)}"
        return self.direct_url

    def _admin_url(self) -> str:
        return self._gateway_url()

    def _all_ready(self) -> bool:
        # Containers start in the background: the gateway may not listen yet.
        try:
            return super()._all_ready()
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    # -- engine events become the gateway's, as the local supervisor's restarts are ---------

    def _follow_engine_events(self) -> None:
        self._followers.append(follow_run_events(self.client, self.run_id, self._relay))

    def _relay(self, action: str, attributes: dict[str, str], when: float) -> None:
        if attributes.get(LABEL_ROLE) != "worker":
            return
        ident = {
            "pool": attributes.get("io.ichaos.pool"),
            "index": int(attributes.get("io.ichaos.index", -1)),
            "container": attributes.get("name"),
        }
        if action == "die":
            self._tell_gateway("worker_exited", {**ident, "exit_code": exit_code(attributes)})
        elif action == "start":
            name = str(attributes.get("name"))
            self._starts[name] = self._starts.get(name, 0) + 1
            if self._starts[name] > 1:
                self._tell_gateway(
                    "worker_restarted", {**ident, "restarts": self._starts[name] - 1}
                )

    def _tell_gateway(self, kind: str, details: dict[str, Any]) -> None:
        # Best effort, as the supervisor's: a gateway that is down itself misses the event, and
        # the relay must go on for the next one.
        with contextlib.suppress(Exception):
            httpx.post(
                f"{self._gateway_url()}/internal/events", json={"kind": kind, "details": details},
                headers={STACK_SECRET_HEADER: self._stack_secret}, timeout=2,
            )  # fmt: skip

    # -- what faults need --------------------------------------------------------------------

    def replicas(self) -> list[Replica]:
        return [
            Replica(ref, f"http://127.0.0.1:{self._published(str(ref), _SERVICE_PORT)}",
                    container=self._names[str(ref)])
            for ref in self._replica_refs
        ]  # fmt: skip

    def process_fault(
        self, replicas: list[ReplicaRef] | None, kind: SignalKind, label: str
    ) -> Injector:
        keys = ["gateway"] if replicas is None else [str(ref) for ref in replicas]
        missing = [k for k in keys if k not in self._containers]
        if missing:
            raise ApplyError(f"no container for {', '.join(missing)}")
        return ContainerInjector([self._containers[k] for k in keys], kind, label)

    def container_fault(self, keys: list[str], action: str, label: str) -> Injector:
        missing = [k for k in keys if k not in self._containers]
        if missing:
            raise ApplyError(f"no container for {', '.join(missing)}")
        return container_action([self._containers[k] for k in keys], action, label,
                                networks=lambda _c: [self._network])  # fmt: skip

    def network_partition(self, replicas: list[ReplicaRef]) -> Injector:
        keys = [str(ref) for ref in replicas]
        missing = [k for k in keys if k not in self._containers]
        if missing:
            raise ApplyError(f"no container for {', '.join(missing)}")
        containers = [self._containers[k] for k in keys]
        return DisconnectInjector(self._network, containers, ", ".join(keys))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "docker", "engine": engine_url(), "run": self.run_id, "url": self.url,
            "gateway": self.direct_url, "toxiproxy": self.toxiproxy.url if self.toxiproxy else None,
            "hops": dict(self.hops), "registry": str(self.registry),
            "containers": dict(self._names),
        }  # fmt: skip

    def stop(self) -> None:
        for stream in self._followers:
            with contextlib.suppress(Exception):
                stream.close()
        self._followers.clear()
        logs = self._run_dir / "docker" / "logs"
        for key, container in list(self._containers.items()):
            with contextlib.suppress(Exception):
                logs.mkdir(parents=True, exist_ok=True)
                log = key.replace("[", "-").rstrip("]")
                (logs / f"{log}.log").write_bytes(container.logs(stdout=True, stderr=True))
        self._containers.clear()
        if self.toxiproxy is not None:
            self.toxiproxy.close()
            self.toxiproxy = None
        errors = []
        try:
            sweep(self.client, run=self.run_id, log=lambda _m: None)
        except Exception as exc:
            errors.append(f"removing run {self.run_id}'s containers: {exc}")
        else:
            self._lease.release()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.client.close()
        if errors:
            raise BackendError("; ".join(errors))


def check_engine(client: Any) -> str:
    """Run one short container on a private network, as the backend runs its own, and return
    the engine's name and version. An engine can answer its API and still be unable to start a
    container on a network (podman without the programs its network backend executes): that is
    :class:`EngineBroken` with the engine's own message, found here in seconds instead of by
    every container the backend would start."""
    import docker

    try:
        version = client.version()
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(
            f"the engine at {engine_url()} did not say its version: {exc}"
        ) from exc
    components = {c.get("Name", ""): c.get("Version", "") for c in version.get("Components", [])}
    name = "podman" if "Podman Engine" in components else "docker"
    described = f"{name} {components.get('Podman Engine') or version.get('Version', '?')}"
    image = ensure_image(client, "ichaos-toxiproxy", toxiproxy_context(), "Dockerfile", None)
    run = f"check{secrets.token_hex(3)}"
    labels = {LABEL_RUN: run, LABEL_OWNER: _owner(), LABEL_ROLE: "check"}
    try:
        network = client.networks.create(f"ichaos-{run}", driver="bridge", labels=labels)
        container = client.containers.run(
            image, ["-version"], name=f"ichaos-{run}", detach=True, network=network.name,
            labels=labels,
        )  # fmt: skip
        status = container.wait(timeout=60).get("StatusCode")
        if status != 0:
            output = container.logs().decode(errors="replace").strip()
            raise EngineBroken(
                f"{described} at {engine_url()} ran a container that exited with {status}: "
                f"{output or '(no output)'}"
            )
    except docker.errors.DockerException as exc:
        raise EngineBroken(
            f"{described} at {engine_url()} answers but cannot run a container: "
            f"{_engine_message(exc)}"
        ) from exc
    finally:
        # A removal that fails here must not hide why the check failed; what it leaves carries
        # this process as owner, so the next sweep after it exits removes it.
        with contextlib.suppress(docker.errors.DockerException):
            sweep(client, run=run, log=lambda _m: None)
    return described
