"""From a scenario's fault entry to the injectors that carry it out on a provisioned target.

Injectors are built when the fault fires, not before: a worker restarted by an earlier fault has
a new pid, and a ``random`` choice is drawn then (from the scenario seed, so reruns choose alike).
"""

from __future__ import annotations

import random
from pathlib import Path

from ._errors import ApplyError
from ._scenario import (
    BurstFault,
    ContainerFault,
    FaultSpec,
    Gateway,
    GpuFaultSpec,
    Link,
    ModelFault,
    PartitionFault,
    PartitionMethod,
    ProcessFault,
    Replicas,
    ServiceRef,
    StreamEffect,
    StreamFault,
    ToxicFault,
)
from ._toxiproxy import STREAM_TOXICS_MARK, Stream, StreamToxicType, Toxic, ToxicType
from .backends import ReplicaRef, Target
from .backends._stack import StackTarget, service_model_path
from .injectors import (
    GpuFaultInjector,
    Injector,
    InjectorGroup,
    ModelCorruptionInjector,
    ModelFaultInjector,
    PartitionInjector,
    SignalKind,
    ToxicInjector,
)


def choose(target: Target, spec: Replicas, rng: random.Random) -> list[int]:
    """The replica indexes a fault hits."""
    size = target.pool_size(spec.pool.value)
    if spec.random is not None:
        if spec.random > size:
            raise ApplyError(f"{spec.describe()}: the pool has only {size} replicas")
        return sorted(rng.sample(range(size), spec.random))
    indexes = (
        list(range(size))
        if spec.index is None
        else (spec.index if isinstance(spec.index, list) else [spec.index])
    )
    missing = [i for i in indexes if not 0 <= i < size]
    if missing:
        raise ApplyError(f"{spec.pool.value} has {size} replicas: no index {missing}")
    return indexes


def _hop_proxies(target: Target, hop: str | Replicas | Link, rng: random.Random) -> list[str]:
    if hop == "client":
        keys = ["client"]
    elif isinstance(hop, Link):
        keys = [hop.key]
    else:
        assert isinstance(hop, Replicas)
        keys = [f"{hop.pool.value}[{i}]" for i in choose(target, hop, rng)]
    try:
        return [target.hops[key] for key in keys]
    except KeyError as exc:
        raise ApplyError(f"this target has no proxy for hop {exc}") from exc


_STREAM_TYPES = {
    StreamEffect.CUT: StreamToxicType.STREAM_CUT,
    StreamEffect.STALL: StreamToxicType.STREAM_STALL,
    StreamEffect.SLOW: StreamToxicType.STREAM_SLOW,
    StreamEffect.CORRUPT: StreamToxicType.STREAM_CORRUPT,
    StreamEffect.DROP_DONE: StreamToxicType.STREAM_DROP_DONE,
    StreamEffect.STATUS: StreamToxicType.HTTP_STATUS,
}


def stream_toxics(name: str, spec: StreamFault, rng: random.Random) -> list[Toxic]:
    """The toxics of a stream fault on one proxy, in the order they are added. The share is
    drawn by the toxic from a seed taken from the scenario's, so a rerun picks alike. A cut
    with ``reset`` has a stock reset_peer toxic with toxicity 0 added first: it never runs, but
    its presence makes Toxiproxy set SO_LINGER 0 on the connections it accepts from then on,
    so that closing one sends a reset."""
    attributes: dict[str, int | float | str | None] = {
        "share": spec.share, "seed": rng.randrange(1, 2**62),
    }  # fmt: skip
    if spec.effect in (StreamEffect.CUT, StreamEffect.STALL):
        attributes["after"] = spec.after
    if spec.effect in (StreamEffect.STALL, StreamEffect.SLOW):
        attributes["delay"] = spec.delay_ms
    if spec.effect is StreamEffect.CORRUPT:
        attributes["event"], attributes["mode"] = spec.event, spec.corrupt
    if spec.effect is StreamEffect.STATUS:
        attributes["status"] = spec.status
        if spec.retry_after is not None:
            attributes["retry_after"] = spec.retry_after
    toxics = [Toxic(name=name, type=_STREAM_TYPES[spec.effect], attributes=attributes)]
    if spec.reset:
        linger = Toxic(name=f"{name}-rst", type=ToxicType.RESET_PEER, stream=Stream.DOWNSTREAM,
                       toxicity=0.0, attributes={"timeout": 0})  # fmt: skip
        toxics.insert(0, linger)
    return toxics


def stream_support(target: Target) -> str | None:
    """Why this target's Toxiproxy cannot make stream faults (None: it can)."""
    if target.toxiproxy is None:
        return "this target has no Toxiproxy"
    version = target.toxiproxy.version()
    if STREAM_TOXICS_MARK in version:
        return None
    return (
        f"stream faults need the project's Toxiproxy build (toxiproxy/, built by ./dev setup "
        f"with Go); the server at {target.toxiproxy.url} is version {version!r}, without them"
    )


def build_injector(name: str, spec: FaultSpec, target: Target, rng: random.Random) -> Injector:
    """The injector for one fault entry (not yet applied)."""
    if isinstance(spec, PartitionFault) and spec.method is PartitionMethod.NETWORK:
        assert isinstance(spec.hop, Replicas)  # the scenario model refuses the client hop
        pool = spec.hop.pool.value
        return target.network_partition(
            [ReplicaRef(pool, i) for i in choose(target, spec.hop, rng)]
        )
    if isinstance(spec, ToxicFault | PartitionFault | StreamFault):
        if target.toxiproxy is None:
            raise ApplyError(f"{name}: this target has no Toxiproxy")
        client = target.toxiproxy
        proxies = _hop_proxies(target, spec.hop, rng)
        parts: list[Injector] = []
        for proxy in proxies:
            if isinstance(spec, StreamFault):
                parts += [ToxicInjector(client, proxy, t) for t in stream_toxics(name, spec, rng)]
            elif isinstance(spec, ToxicFault):
                toxic = Toxic(
                    name=name, type=spec.toxic, stream=spec.stream, toxicity=spec.toxicity,
                    attributes=dict(spec.attributes),
                )  # fmt: skip
                parts.append(ToxicInjector(client, proxy, toxic))
            else:
                parts.append(PartitionInjector(client, proxy))
        return InjectorGroup(f"{name} on {', '.join(proxies)}", parts)
    if isinstance(spec, ProcessFault):
        if isinstance(spec.target, ServiceRef):
            return _services(target, name).service_signal(spec.target.service, spec.signal)
        if isinstance(spec.target, Gateway):
            return target.process_fault(None, spec.signal, "the gateway")
        indexes = choose(target, spec.target, rng)
        pool = spec.target.pool.value
        label = ", ".join(f"{pool}[{i}]" for i in indexes)
        return target.process_fault([ReplicaRef(pool, i) for i in indexes], spec.signal, label)
    if isinstance(spec, ContainerFault):
        if isinstance(spec.target, ServiceRef):
            keys, label = [spec.target.service], f"service {spec.target.service}"
        elif isinstance(spec.target, Gateway):
            keys, label = ["gateway"], "the gateway"
        else:
            pool = spec.target.pool.value
            keys = [str(ReplicaRef(pool, i)) for i in choose(target, spec.target, rng)]
            label = ", ".join(keys)
        return target.container_fault(keys, spec.action.value, label)
    if isinstance(spec, GpuFaultSpec):
        if target.admin_token is None:
            raise ApplyError(f"{name}: GPU fault hooks need the stack's admin token")
        if isinstance(spec.target, ServiceRef):
            url = _services(target, name).service_url(spec.target.service)
            hook = GpuFaultInjector(url, spec.fault, target.admin_token, dict(spec.params))
            return InjectorGroup(name, [hook])
        pool = spec.target.pool.value
        return InjectorGroup(
            name,
            [
                GpuFaultInjector(
                    target.replica(ReplicaRef(pool, i)).url,
                    spec.fault,
                    target.admin_token,
                    dict(spec.params),
                )
                for i in choose(target, spec.target, rng)
            ],
        )
    if isinstance(spec, ModelFault):
        if spec.service is not None:
            return _service_model_injector(name, spec, spec.service, target, rng)
        return _model_injector(name, spec, target, rng)
    if isinstance(spec, BurstFault):  # pragma: no cover - the runner handles bursts itself
        raise ApplyError("bursts are started by the runner")
    raise ApplyError(f"{name}: unsupported fault {spec!r}")  # pragma: no cover


def _model_file(name: str, registry: Path, ref: str, file: str) -> Path:
    """``file`` of model ``ref`` in ``registry``, refused unless it resolves (symlinks
    followed) to a path inside that model version's own directory: a fault damages the model
    it names and nothing else."""
    model, version = ref.split(":", 1)
    home = (registry / model / version).resolve()
    path = home / file
    if not path.resolve().is_relative_to(home):
        raise ApplyError(f"{name}: {ref}/{file} leads outside the model's directory {home}")
    return path


def _services(target: Target, name: str) -> StackTarget:
    if not isinstance(target, StackTarget):
        raise ApplyError(f"{name}: services are a services stack file's; this target has none")
    return target


def _service_model_injector(
    name: str, spec: ModelFault, service: str, target: Target, rng: random.Random
) -> ModelFaultInjector:
    """A file of a service's model directory damaged; with ``reload: restart`` the service is
    restarted to load it, and again after the restore; the revert holds only when the whole
    directory is byte for byte what it was at the start of the run."""
    services = _services(target, name)
    path = service_model_path(services, service, spec.file)
    corruption = ModelCorruptionInjector(
        path, spec.corruption, target.state, seed=rng.randrange(2**31)
    )
    restart = spec.reload == "restart"

    def reload() -> None:
        if restart:
            services.restart_service(service)

    label = f"{spec.corruption.value} of {service}'s {spec.file}, {spec.reload} of {service}"
    return ModelFaultInjector(
        corruption, reload, label, restarts=restart,
        verify=lambda: services.verify_model_dir(service),
    )  # fmt: skip


def _model_injector(
    name: str, spec: ModelFault, target: Target, rng: random.Random
) -> ModelFaultInjector:
    if target.registry is None:
        raise ApplyError(f"{name}: this target has no model registry")
    assert spec.model is not None  # the model refuses a fault with neither model nor service
    path = _model_file(name, target.registry, spec.model, spec.file)
    swap = None
    if spec.swap_with is not None:
        swap = _model_file(name, target.registry, spec.swap_with, spec.file)
        if not swap.is_file():
            raise ApplyError(f"{name}: swap_with: no file {swap}")
    corruption = ModelCorruptionInjector(
        path, spec.corruption, target.state, seed=rng.randrange(2**31), swap_with=swap
    )
    replicas = [] if spec.target is None else choose(target, spec.target, rng)
    pool = spec.target.pool.value if spec.target is not None else ""

    def reload() -> None:
        for index in replicas:
            if spec.reload == "admin":
                target.reload(ReplicaRef(pool, index))
            elif spec.reload == "restart":
                ref = ReplicaRef(pool, index)
                target.process_fault([ref], SignalKind.TERMINATE, str(ref)).apply()

    where = ", ".join(f"{pool}[{i}]" for i in replicas) or "no replica"
    label = f"{spec.corruption.value} of {spec.model}/{spec.file}, {spec.reload} of {where}"
    return ModelFaultInjector(corruption, reload, label, restarts=spec.reload == "restart")
