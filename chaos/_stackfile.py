"""Services stack files: the user's own inference stack as processes ichaos starts, wires and
faults.

A stack file lists services (a command with placeholders, its environment, how to tell it is
healthy, what to do when it exits, the model directory it serves) and the links between them:
``{from: router, to: model}`` means the router reaches the model through a Toxiproxy proxy of
its own, whose URL the router is given by the ``${link:model}`` placeholder. The client hop
goes to the ``entry`` service. Everything here is checked before anything starts, every problem
at its line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from slo import Duration, Issue, SLOFileError, parse_yaml_document, read_document_text

from ._errors import ScenarioError
from ._protocols import Api

SERVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_NAME = SERVICE_NAME
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
MAX_STACK_BYTES = 1 << 20


def _service_name(value: str) -> str:
    if not re.fullmatch(_NAME, value):
        raise ValueError(
            f"invalid service name {value[:70]!r}: 1 to 64 letters, digits, `_` or `-`, "
            "starting with a letter or digit"
        )
    return value


ServiceName = Annotated[
    str, AfterValidator(_service_name), WithJsonSchema({"type": "string", "pattern": _NAME})
]


def link_hop(source: str, dest: str) -> str:
    """The hop key of the link from ``source`` to ``dest``: ``router->model``, spelled here."""
    return f"{source}->{dest}"


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, populate_by_name=True
    )


class Restart(StrEnum):
    """What ichaos does when a service's process ends without being asked to."""

    NEVER = "never"
    ON_FAILURE = "on-failure"  # a non-zero exit or a signal
    ALWAYS = "always"


class ServiceSpec(_Strict):
    """One service: a process ichaos starts, watches and restarts; or, in a stack file with a
    `compose` file, what ichaos needs to know of one of its services."""

    command: list[Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=list, max_length=256
    )
    """the program and its arguments (no shell); placeholders such as `${port}` are filled in.
    What the local backend runs; with `compose` only, leave it out (the compose file says how
    the container runs)."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """with `compose`: the port the service listens on inside its container (required there);
    ichaos publishes it on 127.0.0.1 to check its health."""
    env: dict[Annotated[str, Field(pattern=_ENV_NAME)], Annotated[str, Field(max_length=8192)]] = (
        Field(default_factory=dict)
    )
    """environment variables added to ichaos's own (placeholders filled in too)."""
    cwd: Path | None = None
    """its working directory (relative to the stack file; default the stack file's)."""
    health: str = Field(default="/health", pattern=r"^/[^\s]*$")
    """the path on the service that answers 2xx once it is ready."""
    start_timeout: Duration = Field(default=60.0, gt=0, le=3600)
    """how long it may take from its start to a 2xx health answer."""
    stop_timeout: Duration = Field(default=10.0, gt=0, le=600)
    """how long it may take to end after SIGTERM before it is killed."""
    restart: Restart = Restart.ON_FAILURE
    """`never`, `on-failure` (a non-zero exit or a signal) or `always` after an exit."""
    restart_delay: Duration = Field(default=0.5, gt=0, le=60)
    """the first wait before a restart; doubled after each start that never became healthy
    (at most 8 times the first), back to this once it is healthy again."""
    api: Api | None = None
    """the API it serves (`ichaos`, `openai-completions`, `openai-chat`): for the entry
    service, the scenario's `service.api` when the scenario does not set one."""
    model: str | None = Field(default=None, max_length=4096)
    """the model name it serves, asked for in OpenAI requests (as `service.model`); may use
    `${registry}` and `${stack_dir}` (a server pinned to a folder answers to its path)."""
    model_dir: str | None = Field(default=None, max_length=4096)
    """the directory of the model it loads (relative to the stack file; `${registry}` is the
    ichaos model registry): model faults damage files in it."""
    metrics: str | None = Field(default=None, pattern=r"^/[^\s]*$")
    """the path of its Prometheus metrics, for a scenario's `metrics.sources[].service`."""
    fault_hooks: bool = False
    """it serves the reference worker's GPU fault hooks (`/admin/faults/{kind}`, the admin
    token given to it as `${admin_token}`): `kind: gpu` faults may target it."""


class LinkSpec(_Strict):
    """One service reaching another, through a Toxiproxy proxy of its own."""

    from_: ServiceName = Field(alias="from")
    """the service that connects (its command or environment holds `${link:TO}`; with
    `compose`, the address `TO:PORT`, which ichaos points at the link's proxy)."""
    to: ServiceName
    """the service it connects to."""

    @property
    def hop(self) -> str:
        return link_hop(self.from_, self.to)


class StackFile(_Strict):
    """A stack of the user's own services, started as processes on loopback, or as the
    containers of a compose file on the docker backend."""

    compose: Path | None = None
    """the user's compose file (relative to the stack file): its services run as containers
    on the docker backend, and `services` says the port, health and model of each one that
    the entry, a link or a fault names. With commands too, the same stack runs as processes
    on the local backend."""
    entry: ServiceName | None = None
    """the service the load and the `client` hop go to (default: the only service)."""
    services: dict[ServiceName, ServiceSpec] = Field(min_length=1, max_length=32)
    """the services by name."""
    links: list[LinkSpec] = Field(default_factory=list, max_length=256)
    """which service reaches which: each link gets its own proxy, a hop faults can name."""

    @property
    def as_processes(self) -> bool:
        """Its services can run as processes (the local backend): it has no compose file, or
        its services have commands besides it."""
        return self.compose is None or any(spec.command for spec in self.services.values())

    @property
    def entry_service(self) -> str:
        return self.entry or next(iter(self.services))

    def link(self, hop: str) -> LinkSpec | None:
        return next((link for link in self.links if link.hop == hop), None)

    def start_order(self) -> list[str]:
        """Services in an order where each starts after those it links to."""
        done: list[str] = []
        pending = list(self.services)
        while pending:
            ready = [s for s in pending
                     if all(link.to in done for link in self.links if link.from_ == s)]  # fmt: skip
            if not ready:  # a cycle (refused by the checks): declaration order
                ready = pending[:1]
            done += ready
            pending = [s for s in pending if s not in ready]
        return done


# -- placeholders ------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$\$|\$\{([a-z_]+)(?::([^}]*))?\}")
_SIMPLE = {"port", "host", "model_dir", "python", "stack_dir", "registry", "admin_token"}


@dataclass(frozen=True)
class Placeholder:
    name: str
    arg: str | None

    def __str__(self) -> str:
        return "${" + self.name + (f":{self.arg}" if self.arg is not None else "") + "}"


def placeholders(text: str) -> Iterator[Placeholder]:
    for match in _PLACEHOLDER.finditer(text):
        if match[0] != "$$":
            yield Placeholder(match[1], match[2])


def malformed(text: str) -> str | None:
    """The first ``${`` that is no placeholder (``${PORT}``, ``${ port }``, unclosed), if any."""
    rest = _PLACEHOLDER.sub("", text)
    at = rest.find("${")
    return None if at < 0 else rest[at : at + 24]


def expand(text: str, values: Mapping[str, str], links: Mapping[str, str]) -> str:
    """``text`` with every placeholder filled: ``values`` for the simple ones, ``links`` (the
    proxy URL by target service) for ``${link:NAME}``, the environment for ``${env:NAME}``.
    ``$$`` is a literal ``$``. Raises ValueError naming one that cannot be filled."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, arg = match[1], match[2]
        if name == "link" and arg in links:
            return links[arg]
        if name == "env" and arg is not None:
            if arg not in os.environ:
                raise ValueError(f"${{env:{arg}}}: ${arg} is not set")
            return os.environ[arg]
        if arg is None and name in values:
            return values[name]
        raise ValueError(f"{match[0]}: nothing to fill it with")

    return _PLACEHOLDER.sub(one, text)


def registry_path() -> Path:
    # Imported here: the backends import this module (a services target reads stack files).
    from chaos.backends import registry_dir

    return registry_dir().resolve()


def fixed_values(stack_dir: Path) -> dict[str, str]:
    """The placeholders known before any service starts."""
    return {"python": sys.executable, "stack_dir": str(stack_dir), "host": "127.0.0.1",
            "registry": str(registry_path())}  # fmt: skip


@dataclass(frozen=True)
class LoadedStack:
    """A checked stack file with its directory: what paths in it are relative to."""

    stack: StackFile
    path: Path

    @property
    def base(self) -> Path:
        return self.path.resolve().parent

    @property
    def compose(self) -> Path | None:
        """The compose file, absolute (None: the services are processes)."""
        file = self.stack.compose
        return None if file is None else file if file.is_absolute() else self.base / file

    def model_name(self, service: str) -> str | None:
        raw = self.stack.services[service].model
        return None if raw is None else expand(raw, fixed_values(self.base), {})

    def model_dir(self, service: str) -> Path | None:
        raw = self.stack.services[service].model_dir
        if raw is None:
            return None
        folder = Path(expand(raw, fixed_values(self.base), {}))
        return folder if folder.is_absolute() else self.base / folder

    def cwd(self, service: str) -> Path:
        cwd = self.stack.services[service].cwd
        return self.base if cwd is None else (cwd if cwd.is_absolute() else self.base / cwd)


def _issues(stack: StackFile, base: Path) -> Iterator[Issue]:
    names = list(stack.services)
    if stack.entry is not None and stack.entry not in stack.services:
        yield Issue(("entry",), f"no service named {stack.entry!r} (services: {names})")
    elif stack.entry is None and len(names) > 1:
        yield Issue(("entry",), f"several services ({names}): say which is the `entry`")
    seen: set[str] = set()
    for index, link in enumerate(stack.links):
        for field, name in (("from", link.from_), ("to", link.to)):
            if name not in stack.services:
                yield Issue(("links", index, field), f"no service named {name!r} ({names})")
        if link.from_ == link.to:
            yield Issue(("links", index, "to"), f"{link.from_} links to itself")
        if link.hop in seen:
            yield Issue(("links", index, "to"), f"the link {link.hop} is declared twice")
        seen.add(link.hop)
    yield from _cycle(stack)
    fixed = fixed_values(base)
    for name, spec in stack.services.items():  # the same folder for processes and containers
        yield from _model_dir_issues(name, spec, base, fixed)
    if stack.compose is not None:
        yield from _compose_issues(stack, base)
    if not stack.as_processes:
        return
    yield from _issues_of_links(stack)
    for name, spec in stack.services.items():
        yield from _service_issues(stack, name, spec, base, fixed)


def _model_dir_issues(
    name: str, spec: ServiceSpec, base: Path, fixed: Mapping[str, str]
) -> Iterator[Issue]:
    if spec.model_dir is None:
        return
    try:
        folder = Path(expand(spec.model_dir, fixed, {}))
    except ValueError as exc:
        yield Issue(("services", name, "model_dir"), str(exc))
        return
    folder = folder if folder.is_absolute() else base / folder
    if not folder.is_dir():
        yield Issue(("services", name, "model_dir"), f"no such directory {folder}")


def _issues_of_links(stack: StackFile) -> Iterator[Issue]:
    for index, link in enumerate(stack.links):
        if link.from_ not in stack.services or link.to not in stack.services:
            continue
        spec = stack.services[link.from_]
        texts = [*spec.command, *spec.env.values()]
        if not any(p.name == "link" and p.arg == link.to for t in texts for p in placeholders(t)):
            yield Issue(
                ("links", index, "from"),
                f"{link.from_}'s command and environment never use ${{link:{link.to}}}: "
                f"it would not reach {link.to} through this link's proxy",
            )


def _cycle(stack: StackFile) -> Iterator[Issue]:
    reach = {s: {link.to for link in stack.links if link.from_ == s} for s in stack.services}
    for start in stack.services:
        frontier, seen = set(reach[start]), set()
        while frontier:
            node = frontier.pop()
            if node == start:
                yield Issue(("links",), f"the links form a cycle through {start}")
                return
            if node not in seen:
                seen.add(node)
                frontier |= reach.get(node, set())


def _service_issues(
    stack: StackFile, name: str, spec: ServiceSpec, base: Path, fixed: Mapping[str, str]
) -> Iterator[Issue]:
    linked = {link.to for link in stack.links if link.from_ == name}
    used_port = used_token = False
    texts: list[tuple[tuple[str | int, ...], str]] = [
        (("command", i), t) for i, t in enumerate(spec.command)
    ]
    texts += [(("env", k), v) for k, v in spec.env.items()]
    for loc, text in texts:
        where = ("services", name, *loc)
        if (bad := malformed(text)) is not None:
            yield Issue(where, f"{bad!r} is not a placeholder: write ${{port}}, ${{link:NAME}}, "
                        "... (lower case, no spaces), and `$$` for a literal `$`")  # fmt: skip
        for p in placeholders(text):
            if p.name == "admin_token" and loc[0] == "command":
                why = "which every process on the machine can read, and the lease records"
                yield Issue(where, f"${{admin_token}} goes in `env`, not the command line ({why})")
            used_port |= p.name == "port"
            used_token |= p.name == "admin_token"
            if p.name == "link":
                if p.arg not in linked:
                    yield Issue(where, f"{p}: no link from {name} to {p.arg!r} is declared "
                                f"(add `{{from: {name}, to: {p.arg}}}` to `links`)")  # fmt: skip
            elif p.name == "env":
                if not p.arg or p.arg not in os.environ:
                    yield Issue(where, f"{p}: ${p.arg} is not set in ichaos's environment")
            elif p.name not in _SIMPLE or p.arg is not None:
                known = ", ".join("${" + s + "}" for s in sorted(_SIMPLE))
                yield Issue(where, f"unknown placeholder {p} (known: {known}, ${{link:NAME}}, "
                            "${env:NAME}; `$$` is a literal `$`)")  # fmt: skip
            elif p.name == "model_dir" and spec.model_dir is None:
                yield Issue(where, f"{p}: the service declares no `model_dir`")
    if spec.model is not None:
        for p in placeholders(spec.model):
            if p.name not in fixed or p.arg is not None:
                known = ", ".join("${" + s + "}" for s in sorted(fixed))
                yield Issue(("services", name, "model"), f"{p}: a model name may use {known}")
    if spec.fault_hooks and not used_token:
        why = "give it ${admin_token} (the reference worker reads $ICHAOS_ADMIN_TOKEN)"
        yield Issue(("services", name, "fault_hooks"), f"fault hooks need the admin token: {why}")
    if not spec.command:
        why = ("the local backend starts every service as a process when one has a command"
               if stack.compose is not None else "or the stack file a `compose` file")  # fmt: skip
        yield Issue(("services", name, "command"), f"{name} needs a `command` (the program and "
                    f"its arguments): {why}")  # fmt: skip
        return
    if not used_port:
        why = "use ${port} in its command or environment"
        yield Issue(("services", name, "command"), f"{name} is never told its port: {why}")
    if spec.cwd is not None:
        cwd = spec.cwd if spec.cwd.is_absolute() else base / spec.cwd
        if not cwd.is_dir():
            yield Issue(("services", name, "cwd"), f"no such directory {cwd}")


# -- compose files ---------------------------------------------------------------------------

# Keys of a compose service that would take a container out of the run's reach: a fixed name
# collides with another run's (and the user's own stack), the host's network bypasses every
# proxy and port choice of the run.
_COMPOSE_REFUSED = {
    "container_name": "ichaos names every container after its run, so that runs never collide",
    "network_mode": "the service must be on the run's network, behind the run's proxies",
}


def address_pattern(host: str, port: int) -> re.Pattern[str]:
    """``host:port`` as a whole address in a text (not ``myhost:8000`` nor ``host:80001``)."""
    return re.compile(rf"(?<![A-Za-z0-9_.-]){re.escape(host)}:{port}(?![0-9])")


def compose_texts(service: Mapping[str, object]) -> list[str]:
    """The texts of a compose service where it may name another's address: its command,
    entrypoint and environment values (a string or a list; a mapping or `KEY=value` lines)."""
    texts: list[str] = []
    for key in ("command", "entrypoint"):
        value = service.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [str(v) for v in value]
    env = service.get("environment")
    if isinstance(env, dict):
        texts += [str(v) for v in env.values() if v is not None]
    elif isinstance(env, list):
        texts += [str(v).partition("=")[2] for v in env]
    return texts


def read_compose(path: Path) -> dict[str, dict[str, object]]:
    """The services of a compose file, by name; raises ValueError saying what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(read_document_text(path, max_bytes=MAX_STACK_BYTES))
    except (SLOFileError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: not a readable compose file: {exc}") from exc
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise ValueError(f"{path}: a compose file has a `services` mapping; this one has none")
    return {str(k): v if isinstance(v, dict) else {} for k, v in services.items()}


def _compose_issues(stack: StackFile, base: Path) -> Iterator[Issue]:
    assert stack.compose is not None
    path = stack.compose if stack.compose.is_absolute() else base / stack.compose
    if not path.is_file():
        yield Issue(("compose",), f"no such file {path}")
        return
    try:
        compose = read_compose(path)
    except ValueError as exc:
        yield Issue(("compose",), str(exc))
        return
    for name, spec in stack.services.items():
        where = ("services", name)
        if name not in compose:
            yield Issue(where, f"{path.name} has no service {name!r} (its services: "
                        f"{sorted(compose)})")  # fmt: skip
            continue
        if spec.fault_hooks and not stack.as_processes:
            yield Issue((*where, "fault_hooks"), "GPU fault hooks are for services ichaos "
                        "starts as processes, not compose services")  # fmt: skip
        if spec.port is None:
            yield Issue((*where, "port"), f"the port {name} listens on inside its container is "
                        "needed (health checks, the client hop and links go to it)")  # fmt: skip
        for key, why in _COMPOSE_REFUSED.items():
            if key in compose[name]:
                yield Issue(where, f"{path.name} gives {name} a `{key}`: remove it ({why})")
    for index, link in enumerate(stack.links):
        source, dest = compose.get(link.from_), stack.services.get(link.to)
        if source is None or dest is None or dest.port is None:
            continue
        pattern = address_pattern(link.to, dest.port)
        if not any(pattern.search(text) for text in compose_texts(source)):
            yield Issue(
                ("links", index, "from"),
                f"{link.from_}'s command, entrypoint and environment in {path.name} never name "
                f"{link.to}:{dest.port}: ichaos points that address at the link's proxy, so "
                f"{link.from_} would not reach {link.to} through it",
            )


def is_services_stack(text: str) -> bool:
    """A stack file of services (not the reference stack's pools): it has `services:`."""
    return re.search(r"^services\s*:", text, flags=re.MULTILINE) is not None


def load_stack_file(path: Path) -> LoadedStack:
    """Read and check a services stack file; raises :class:`ScenarioError` listing every
    problem with file, line and field."""
    try:
        text = read_document_text(path, max_bytes=MAX_STACK_BYTES)
        stack = parse_yaml_document(
            text, StackFile, source=str(path),
            check=lambda s: list(_issues(s, path.resolve().parent)),
        )  # fmt: skip
    except SLOFileError as exc:
        hint = ""
        if _looks_like_compose(path):
            hint = ("\n(this looks like a compose file: an ichaos stack file names it with "
                    "`compose:` and says the port and health of its services)")  # fmt: skip
        raise ScenarioError(f"invalid stack file:\n{exc}{hint}") from exc
    return LoadedStack(stack, path)


def _looks_like_compose(path: Path) -> bool:
    try:
        services = read_compose(path)
    except ValueError:
        return False
    return any("image" in s or "build" in s for s in services.values())
