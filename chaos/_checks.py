"""What a scenario means, checked before anything starts: references, timing, overlaps, and
the hops and replicas of the stack it will run on.

Each problem is an :class:`slo.Issue` located by a path into the file (``faults[1].hop``), so
the loader reports it at the line of the offending value. The checks that need nothing but the
scenario run in its model validator too, for scenarios built in code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from slo import Issue, SLODocument, format_duration

from ._scenario import (
    AmplificationBound,
    Backend,
    BudgetCeiling,
    BurnRateAbort,
    CanaryRollback,
    ContainerFault,
    FallbackShare,
    Gateway,
    GpuFaultSpec,
    Link,
    MetricAbort,
    MetricExpectation,
    MetricProbe,
    ModelFault,
    PartitionFault,
    Pool,
    ProbeAbort,
    ProcessFault,
    Replicas,
    Scenario,
    ServiceRef,
    SliProbe,
    SLOMet,
    StatusShare,
    StreamFault,
    ToxicFault,
    _Fault,
)
from ._stackfile import StackFile


def scenario_issues(scenario: Scenario) -> list[Issue]:
    """Every problem visible in the scenario itself (SLO names aside: files may define them)."""
    return [*_fault_issues(scenario), *_reference_issues(scenario), *_overlap_issues(scenario),
            *_inline_slo_issues(scenario), *_metric_issues(scenario)]  # fmt: skip


def slo_name_issues(scenario: Scenario, known: list[str]) -> list[Issue]:
    """References to SLOs that neither the inline documents nor the SLO files define."""
    wanted: list[tuple[tuple[str | int, ...], str]] = [
        *((("expect", i, "slo"), e.slo) for i, e in enumerate(scenario.expect)
          if isinstance(e, SLOMet | BudgetCeiling)),
        *((("abort", i, "slo"), a.slo) for i, a in enumerate(scenario.abort)
          if isinstance(a, BurnRateAbort)),
        *((("steady_state", "probes", i, "slo"), p.slo)
          for i, p in enumerate(scenario.steady_state.probes) if isinstance(p, SliProbe)),
    ]  # fmt: skip
    return [
        Issue(loc, f"no SLO named {name!r} (SLOs: {known})")
        for loc, name in wanted
        if name not in known
    ]


def stack_issues(scenario: Scenario, replicas: Mapping[Pool, int]) -> list[Issue]:
    """Hops and targets naming replicas the reference stack does not have, and the services
    and links only a services stack file has."""
    found = []
    for index, fault in enumerate(scenario.faults):
        for field, spec in _replica_fields(fault):
            have = replicas.get(spec.pool, 0)
            problem = _missing_replicas(spec, have)
            if problem:
                found.append(Issue(("faults", index, *field), problem))
        for name, what in _service_fields(fault):
            why = "the reference stack has pools and a gateway; services and links are a "
            found.append(Issue(("faults", index, name), f"{what}: {why}services stack file's"))
    for index, source in enumerate(scenario.metrics.sources if scenario.metrics else []):
        if source.service is not None:
            why = "(scrape `replicas` of a pool, or the gateway's `path`)"
            message = f"service {source.service!r}: the reference stack has no services {why}"
            found.append(Issue(("metrics", "sources", index, "service"), message))
    return found


_HopFault = ToxicFault | PartitionFault | StreamFault
"""The faults that act on a hop."""


def _service_fields(fault: _Fault) -> Iterator[tuple[str, str]]:
    """Where a fault names a service or a link of a services stack file."""
    if isinstance(fault, _HopFault) and isinstance(fault.hop, Link):
        yield "hop", f"link {fault.hop.key}"
    if isinstance(fault, ProcessFault | ContainerFault | GpuFaultSpec) and isinstance(
        fault.target, ServiceRef
    ):
        yield "target", fault.target.describe()
    if isinstance(fault, ModelFault) and fault.service is not None:
        yield "service", f"service {fault.service}"


def wrong_backend(stack: StackFile, backend: Backend) -> str | None:
    """Why ``stack`` cannot run on ``backend`` (None: it can). Its services are processes on
    the local backend (they have commands), containers on the docker backend (it has a
    compose file), or either."""
    if backend is Backend.LOCAL and stack.as_processes:
        return None
    if backend is Backend.DOCKER and stack.compose is not None:
        return None
    if stack.compose is None:
        return f"a services stack file runs on the local backend, not {backend.value}"
    if not stack.as_processes:
        return (f"a stack file with `compose` and no commands runs on the docker backend, not "
                f"{backend.value}")  # fmt: skip
    return f"a stack file runs on the local or the docker backend, not {backend.value}"


def services_stack_issues(scenario: Scenario, stack: StackFile) -> list[Issue]:
    """What a scenario asks of a services stack file that the file does not have: links and
    services it does not declare, pools and a gateway it has not got, a model fault on a
    service without a model directory, a GPU fault on one without fault hooks."""
    found: list[Issue] = []
    names = list(stack.services)
    if (problem := wrong_backend(stack, scenario.backend)) is not None:
        found.append(Issue(("backend",), problem))
    for index, fault in enumerate(scenario.faults):
        where = ("faults", index)
        hop = fault.hop if isinstance(fault, _HopFault) else None
        if isinstance(hop, Link) and stack.link(hop.key) is None:
            links = [link.hop for link in stack.links] or "none"
            message = f"the stack file declares no link {hop.key} (links: {links})"
            found.append(Issue((*where, "hop"), message))
        for field, what in _pool_fields(fault):
            found.append(Issue((*where, field), f"{what}: a services stack file has no pools or "
                               f"gateway; name a service ({names}) or a link"))  # fmt: skip
        service = None
        if isinstance(fault, GpuFaultSpec) and isinstance(fault.target, ServiceRef):
            service, field = fault.target.service, "target"
        if isinstance(fault, ProcessFault | ContainerFault) and isinstance(
            fault.target, ServiceRef
        ):
            service, field = fault.target.service, "target"
        if isinstance(fault, ModelFault) and fault.service is not None:
            service, field = fault.service, "service"
        if service is None:
            continue
        if service not in stack.services:
            found.append(Issue((*where, field), f"no service named {service!r} ({names})"))
            continue
        spec = stack.services[service]
        if isinstance(fault, ModelFault) and spec.model_dir is None:
            found.append(Issue((*where, field), f"service {service} declares no `model_dir`"))
        if isinstance(fault, GpuFaultSpec) and not spec.fault_hooks:
            why = "declares no `fault_hooks` (the reference worker's GPU fault API)"
            found.append(Issue((*where, field), f"service {service} {why}"))
    for index, source in enumerate(scenario.metrics.sources if scenario.metrics else []):
        at = ("metrics", "sources", index)
        if source.replicas is not None:
            found.append(Issue((*at, "replicas"), "a services stack file has no pools: scrape a "
                               "`service`"))  # fmt: skip
        elif source.service is not None:
            if source.service not in stack.services:
                found.append(Issue((*at, "service"), f"no service named {source.service!r} "
                                   f"({names})"))  # fmt: skip
            elif stack.services[source.service].metrics is None and (
                "path" not in source.model_fields_set
            ):
                found.append(Issue((*at, "service"), f"service {source.service} declares no "
                                   "`metrics` path: give the source a `path`"))  # fmt: skip
    return found


def _pool_fields(fault: _Fault) -> Iterator[tuple[str, str]]:
    """Where a fault names pools, replicas, the gateway or the registry."""
    for field, spec in _replica_fields(fault):
        yield field[0], spec.describe()
    if isinstance(fault, ProcessFault | ContainerFault) and isinstance(fault.target, Gateway):
        yield "target", "the gateway"
    if isinstance(fault, ModelFault) and fault.model is not None:
        yield "model", f"registry model {fault.model}"


def _missing_replicas(spec: Replicas, have: int) -> str | None:
    pool = spec.pool.value
    if have == 0:
        return f"the stack runs no {pool} replica"
    beyond = [i for i in spec.indices() or [] if i >= have]
    if beyond:
        return (
            f"{pool}{beyond} does not exist: the stack runs {have} {pool} "
            f"replica{'s' if have > 1 else ''} ({pool}[0]…{pool}[{have - 1}])"
        )
    if spec.random is not None and spec.random > have:
        return f"{spec.random} random {pool} replicas of the {have} the stack runs"
    return None


def _replica_fields(fault: _Fault) -> Iterator[tuple[tuple[str, ...], Replicas]]:
    if isinstance(fault, _HopFault) and isinstance(fault.hop, Replicas):
        yield ("hop",), fault.hop
    if isinstance(fault, ProcessFault | ContainerFault | GpuFaultSpec | ModelFault) and isinstance(
        fault.target, Replicas
    ):
        yield ("target",), fault.target


def _fault_issues(scenario: Scenario) -> Iterator[Issue]:
    names = scenario.fault_names()
    seen: set[str] = set()
    end = scenario.load.duration
    ends = format_duration(end)
    for index, fault in enumerate(scenario.faults):
        name = names[index]
        if name in seen:
            yield Issue(("faults", index, "name"), f"a fault named {name!r} comes before this")
        seen.add(name)
        if fault.at >= end:
            yield Issue(
                ("faults", index, "at"),
                f"fault {name!r} starts at {format_duration(fault.at)}, after the load ends "
                f"({ends})",
            )
        elif fault.end is not None and fault.end > end:
            yield Issue(
                ("faults", index, "duration"),
                f"fault {name!r} would last until {format_duration(fault.end)}, past the load's "
                f"end at {ends}: shorten it, or leave `duration` out to keep it until the end",
            )
    problem = scenario.unsupported(scenario.backend)
    if problem is not None:
        yield problem
    if scenario.backend.value == "url" and scenario.url is None:
        yield Issue(("backend",), "`backend: url` needs the service's `url`")
    elif scenario.backend.value != "url" and scenario.url is not None:
        yield Issue(("url",), "`url` goes with `backend: url`, and only with it")


def _reference_issues(scenario: Scenario) -> Iterator[Issue]:
    faults = scenario.fault_names()
    for index, expect in enumerate(scenario.expect):
        if isinstance(expect, AmplificationBound):
            clients = [c.name for c in scenario.load.clients]
            if expect.client is not None and expect.client not in clients:
                known = f"groups: {clients}" if clients else "`load.clients` names none"
                yield Issue(("expect", index, "client"),
                            f"no client group named {expect.client!r} ({known})")  # fmt: skip
        if isinstance(expect, FallbackShare | StatusShare | CanaryRollback | AmplificationBound):
            field = "after" if isinstance(expect, CanaryRollback) else "during"
            ref = expect.after if isinstance(expect, CanaryRollback) else expect.during
            if ref is not None and ref not in faults:
                yield Issue(("expect", index, field), f"no fault named {ref!r} (faults: {faults})")
            elif isinstance(expect, FallbackShare) and scenario.fault(expect.during).end is None:
                yield Issue(
                    ("expect", index, field),
                    f"fault {expect.during!r} has no duration: a fallback share needs its window",
                )
    probes = [p.name for p in scenario.steady_state.probes]
    for index, probe in enumerate(scenario.steady_state.probes):
        if probes.index(probe.name) < index:
            yield Issue(
                ("steady_state", "probes", index, "name"),
                f"a probe named {probe.name!r} comes before this",
            )
    for index, abort in enumerate(scenario.abort):
        if isinstance(abort, ProbeAbort) and abort.probe not in probes:
            yield Issue(
                ("abort", index, "probe"), f"no probe named {abort.probe!r} (probes: {probes})"
            )


def _metric_issues(scenario: Scenario) -> Iterator[Issue]:
    """Sources and series named once, and every reference to a series or source resolved."""
    metrics = scenario.metrics
    sources = [s.name for s in metrics.sources] if metrics else []
    series = [s.name for s in metrics.series] if metrics else []
    if metrics is not None:
        for index, source in enumerate(metrics.sources):
            if sources.index(source.name) < index:
                yield Issue(("metrics", "sources", index, "name"),
                            f"a source named {source.name!r} comes before this")  # fmt: skip
        for index, one in enumerate(metrics.series):
            if series.index(one.name) < index:
                yield Issue(("metrics", "series", index, "name"),
                            f"a series named {one.name!r} comes before this")  # fmt: skip
            if one.source is not None and one.source not in sources:
                yield Issue(("metrics", "series", index, "source"),
                            f"no source named {one.source!r} (sources: {sources})")  # fmt: skip
    wanted: list[tuple[tuple[str | int, ...], str]] = [
        *((("steady_state", "probes", i, "series"), p.series)
          for i, p in enumerate(scenario.steady_state.probes) if isinstance(p, MetricProbe)),
        *((("abort", i, "series"), a.series)
          for i, a in enumerate(scenario.abort) if isinstance(a, MetricAbort)),
        *((("expect", i, "series"), e.series)
          for i, e in enumerate(scenario.expect) if isinstance(e, MetricExpectation)),
    ]  # fmt: skip
    for loc, name in wanted:
        if name not in series:
            known = f"series: {series}" if metrics else "the scenario has no `metrics`"
            yield Issue(loc, f"no series named {name!r} ({known})")
    faults = scenario.fault_names()
    for index, expect in enumerate(scenario.expect):
        if not isinstance(expect, MetricExpectation):
            continue
        for field, ref in (("during", expect.during), ("after", expect.after)):
            if ref is None:
                continue
            if ref not in faults:
                yield Issue(("expect", index, field), f"no fault named {ref!r} (faults: {faults})")
            elif field == "during" and scenario.fault(ref).end is None:
                why = f"fault {ref!r} has no duration: give `after`, or a duration"
                yield Issue(("expect", index, field), why)


def _inline_slo_issues(scenario: Scenario) -> Iterator[Issue]:
    for index, entry in enumerate(scenario.slos):
        if isinstance(entry, SLODocument):
            for issue in entry.issues():
                yield Issue(("slos", index, *issue.loc), issue.message)


# -- overlaps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    """Where and when a fault acts, for the overlap rule: what it touches (hops or models) and
    its time window on the run's clock."""

    index: int
    resource: str
    touches: frozenset[tuple[str, int | None]]
    start: float
    end: float

    def clashes(self, other: _Span) -> bool:
        return (
            self.resource == other.resource
            and self.start < other.end
            and other.start < self.end
            and any(_same(a, b) for a in self.touches for b in other.touches)
        )


def _same(a: tuple[str, int | None], b: tuple[str, int | None]) -> bool:
    # (pool, None) is every replica of the pool, or a random draw from it: it meets them all.
    return a[0] == b[0] and (a[1] is None or b[1] is None or a[1] == b[1])


def _overlap_issues(scenario: Scenario) -> Iterator[Issue]:
    """Two faults that would fight over one thing at once: two partitions of one hop, two toxics
    of one type and stream on one hop, two damages of one model (the second backup would save
    bytes the first already damaged, so the restore could never give the original back)."""
    spans = [span for i, f in enumerate(scenario.faults) if (span := _span(scenario, i, f))]
    names = scenario.fault_names()
    for later, span in enumerate(spans):
        for earlier in spans[:later]:
            if span.clashes(earlier):
                what = "model" if span.resource == "model" else "hop"
                since = format_duration(max(span.start, earlier.start))
                yield Issue(
                    ("faults", span.index),
                    f"overlaps fault {names[earlier.index]!r} on the same {what} "
                    f"({_describe(scenario.faults[span.index])}) from {since}: two such faults at "
                    "once cannot be reverted cleanly; run them one after the other",
                )
                break


def _span(scenario: Scenario, index: int, fault: _Fault) -> _Span | None:
    end = fault.end if fault.end is not None else scenario.load.duration
    if isinstance(fault, _HopFault):
        touches = _hop_set(fault.hop)
        if isinstance(fault, PartitionFault):
            resource = "partition"
        elif isinstance(fault, StreamFault):
            resource = f"stream:{fault.effect.value}"
        else:
            resource = f"toxic:{fault.toxic.value}:{fault.stream.value}"

        return _Span(index, resource, touches, fault.at, end)
    if isinstance(fault, ModelFault):
        models = {fault.model or f"service {fault.service}",
                  *([fault.swap_with] if fault.swap_with else [])}  # fmt: skip
        return _Span(index, "model", frozenset((m, None) for m in models), fault.at, end)
    return None


def _hop_set(hop: Replicas | Link | str) -> frozenset[tuple[str, int | None]]:
    if isinstance(hop, str):
        return frozenset({(hop, None)})
    if isinstance(hop, Link):
        return frozenset({(hop.key, None)})
    indices = hop.indices()
    if indices is None:
        return frozenset({(hop.pool.value, None)})
    return frozenset((hop.pool.value, i) for i in indices)


def _describe(fault: _Fault) -> str:
    if isinstance(fault, ModelFault):
        return fault.model or f"the model of service {fault.service}"
    if isinstance(fault, _HopFault) and isinstance(fault.hop, Replicas):
        return fault.hop.describe()
    if isinstance(fault, _HopFault) and isinstance(fault.hop, Link):
        return fault.hop.key
    return "client"
