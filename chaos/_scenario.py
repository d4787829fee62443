"""Scenario files: what traffic to send, what to do to the service, and what must still hold.

Every model forbids unknown fields and every problem is reported with file, line and field
(through ``slo.load_yaml_document``) before anything is started. References between parts of
a scenario (an expectation naming a fault or an SLO, a probe naming an SLO) are checked here
too, so a typo fails validation instead of a 60-second run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from slo import SLO, Duration, SLODocument, SLOFileError, load_slos, load_yaml_document

from ._errors import ScenarioError
from ._injectors import Corruption, GpuFault, SignalKind
from ._shapes import Arrivals, Constant, Ramp, Shape, Spike, Step
from ._toxiproxy import Stream, ToxicType

_UNITS = {"s": 1.0, "m": 1 / 60, "h": 1 / 3600}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")


def _rate(value: Any) -> Any:
    if isinstance(value, str):
        match = _RATE.match(value)
        if not match:
            raise ValueError(f"invalid rate {value!r}: write requests per unit, e.g. 20/s or 600/m")
        return float(match[1]) * _UNITS[match[2]]
    if isinstance(value, bool):
        raise ValueError("a rate is a number of requests per second, not true/false")
    return value


Rate = Annotated[
    float,
    BeforeValidator(_rate),
    Field(ge=0, le=100_000),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^\s*\d+(\.\d+)?\s*/\s*(s|m|h)\s*$",
                    "examples": ["20/s", "600/m"],
                },
                {"type": "number", "minimum": 0, "maximum": 100_000},
            ]
        }
    ),
]
"""Requests per second; files write ``20/s``, ``600/m`` or a bare number of requests/s."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Backend(StrEnum):
    LOCAL = "local"  # the reference stack as processes behind Toxiproxy, on loopback
    URL = "url"  # an already running service: load and network faults only
    DOCKER = "docker"  # the reference stack as containers behind a Toxiproxy container


# -- load ------------------------------------------------------------------------------------


class ConstantShape(_Strict):
    kind: Literal["constant"] = "constant"


class RampShape(_Strict):
    kind: Literal["ramp"]
    to: Rate
    over: Duration = Field(gt=0)


class StepAt(_Strict):
    at: Duration
    rate: Rate


class StepShape(_Strict):
    kind: Literal["step"]
    steps: list[StepAt] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _sorted(cls, steps: list[StepAt]) -> list[StepAt]:
        if [s.at for s in steps] != sorted(s.at for s in steps):
            raise ValueError("steps must be in order of `at`")
        return steps


class SpikeAt(_Strict):
    at: Duration
    length: Duration = Field(gt=0)
    factor: float = Field(gt=0, le=1000)


class SpikeShape(_Strict):
    kind: Literal["spike"]
    spikes: list[SpikeAt] = Field(min_length=1)


ShapeSpec = Annotated[
    ConstantShape | RampShape | StepShape | SpikeShape, Field(discriminator="kind")
]


class PromptSet(StrEnum):
    CHAT = "chat"  # short everyday questions
    SHORT = "short"  # one or two words
    LONG = "long"  # paragraph-long prompts


class PromptFile(_Strict):
    file: Path = Field(description="a text file, one prompt per line (blank lines skipped)")


class Endpoint(StrEnum):
    GENERATE = "generate"  # POST /v1/generate
    COMPLETIONS = "completions"  # POST /v1/completions (OpenAI subset)


class Load(_Strict):
    rate: Rate = Field(description="the base arrival rate, e.g. 20/s")
    shape: ShapeSpec = ConstantShape()
    arrivals: Arrivals = Arrivals.UNIFORM
    duration: Duration = Field(gt=0, le=3600)
    prompts: PromptSet | PromptFile = PromptSet.CHAT
    max_new_tokens: int = Field(default=8, ge=1, le=512)
    stream: bool = False
    user_share: float = Field(default=0.0, ge=0, le=1, description="requests carrying a user")
    users: int = Field(default=200, ge=1, description="distinct users drawn from")
    endpoint: Endpoint = Endpoint.GENERATE
    timeout: Duration = Field(default=10.0, gt=0)
    max_lag: Duration = Field(
        default=0.050,
        gt=0,
        description="the run is invalid when the generator's schedule lag p99 exceeds this "
        "(lag adds to every measured latency; 50 ms is a tenth of a 500 ms bound)",
    )
    max_cpu: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="the run is invalid when the generator used more than this share of a core",
    )

    def to_shape(self) -> Shape:
        shape = self.shape
        if isinstance(shape, RampShape):
            return Ramp(self.rate, shape.to, shape.over)
        if isinstance(shape, StepShape):
            return Step(self.rate, tuple((s.at, s.rate) for s in shape.steps))
        if isinstance(shape, SpikeShape):
            return Spike(self.rate, tuple((s.at, s.length, s.factor) for s in shape.spikes))
        return Constant(self.rate)


# -- targets ---------------------------------------------------------------------------------


class Pool(StrEnum):
    PRIMARY = "primary"
    CANARY = "canary"
    FALLBACK = "fallback"


class Replicas(_Strict):
    """Which workers: ``index`` (one or several), ``random`` (that many, drawn with the
    scenario seed) or, with neither, every replica of the pool."""

    pool: Pool
    index: int | list[int] | None = None
    random: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_way(self) -> Replicas:
        if self.index is not None and self.random is not None:
            raise ValueError("give `index` or `random`, not both")
        return self

    def describe(self) -> str:
        if self.random is not None:
            return f"{self.random} random {self.pool.value}"
        if self.index is None:
            return f"every {self.pool.value}"
        return f"{self.pool.value}{self.index if isinstance(self.index, list) else [self.index]}"


class Gateway(_Strict):
    gateway: Literal[True] = True


def _hop(value: Any) -> Any:
    """``client`` or ``primary[0]``-style shorthand for a gateway→worker hop."""
    if isinstance(value, str) and value != "client":
        match = re.fullmatch(r"(primary|canary|fallback)(?:\[(\d+)\])?", value.strip())
        if not match:
            raise ValueError(
                f"invalid hop {value!r}: `client` (client → gateway) or a worker link such as "
                "`primary[0]`, `canary[0]`, `fallback[0]` or `primary` (every replica)"
            )
        index = None if match[2] is None else int(match[2])
        return {"pool": match[1], "index": index}
    return value


Hop = Annotated[
    Literal["client"] | Replicas,
    BeforeValidator(_hop),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^(client|(primary|canary|fallback)(\[\d+\])?)$",
                    "examples": ["client", "primary[0]", "primary"],
                },
                {
                    "type": "object",
                    "properties": {
                        "pool": {"enum": [p.value for p in Pool]},
                        "index": {"type": ["integer", "array", "null"]},
                    },
                    "required": ["pool"],
                },
            ]
        }
    ),
]


# -- faults ----------------------------------------------------------------------------------


class _Fault(_Strict):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    at: Duration = Field(description="seconds after the load starts")
    duration: Duration | None = Field(default=None, gt=0, description="reverted after this")

    @property
    def end(self) -> float | None:
        return None if self.duration is None else self.at + self.duration


class ToxicFault(_Fault):
    """A Toxiproxy toxic on one hop: latency (with jitter), bandwidth, slow_close, timeout,
    reset_peer, slicer or limit_data, on either stream, with a toxicity."""

    kind: Literal["toxic"]
    hop: Hop
    toxic: ToxicType
    stream: Stream = Stream.DOWNSTREAM
    toxicity: float = Field(default=1.0, ge=0, le=1)
    attributes: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _attributes(self) -> ToxicFault:
        allowed = _TOXIC_ATTRIBUTES[self.toxic]
        unknown = sorted(set(self.attributes) - allowed)
        if unknown:
            raise ValueError(
                f"{self.toxic.value} has no attribute {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(allowed)) or 'none'}"
            )
        return self


_TOXIC_ATTRIBUTES: dict[ToxicType, set[str]] = {
    ToxicType.LATENCY: {"latency", "jitter"},
    ToxicType.BANDWIDTH: {"rate"},
    ToxicType.SLOW_CLOSE: {"delay"},
    ToxicType.TIMEOUT: {"timeout"},
    ToxicType.RESET_PEER: {"timeout"},
    ToxicType.SLICER: {"average_size", "size_variation", "delay"},
    ToxicType.LIMIT_DATA: {"bytes"},
}


class PartitionMethod(StrEnum):
    PROXY = "proxy"  # the hop's Toxiproxy proxy disabled: connections refused
    NETWORK = "network"  # the replicas' containers disconnected from the network (docker backend)


class PartitionFault(_Fault):
    """The hop is cut: its proxy is down (every connection refused), or, with
    ``method: network`` on the docker backend, the replicas' containers leave the network."""

    kind: Literal["partition"]
    hop: Hop
    method: PartitionMethod = PartitionMethod.PROXY

    @model_validator(mode="after")
    def _network_cuts_replicas(self) -> PartitionFault:
        if self.method is PartitionMethod.NETWORK and self.hop == "client":
            raise ValueError("`method: network` cuts replicas off; the client hop has no container")
        return self


class ProcessFault(_Fault):
    """SIGKILL, SIGTERM or SIGSTOP (pause, resumed after ``duration``) of workers or the gateway."""

    kind: Literal["process"]
    signal: SignalKind
    target: Replicas | Gateway

    @model_validator(mode="after")
    def _pause_needs_duration(self) -> ProcessFault:
        if self.signal is SignalKind.PAUSE and self.duration is None:
            raise ValueError("a pause needs a `duration` (when to resume)")
        return self


class GpuFaultSpec(_Fault):
    """A worker's fault hook: gpu_error (the worker dies on its next batch), hang, slow, oom."""

    kind: Literal["gpu"]
    fault: GpuFault
    target: Replicas
    params: dict[str, int] = Field(default_factory=dict, description="ms_per_token, count")


class ModelFault(_Fault):
    """Damage a registry file, then make the replicas serving it reload (restart or admin reload);
    the original bytes come back on revert, checked by sha256."""

    kind: Literal["model"]
    model: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9_.-]+$", description="NAME:VERSION"
    )
    file: str = "model.safetensors"
    corruption: Corruption = Corruption.BIT_FLIP
    swap_with: str | None = Field(default=None, description="NAME:VERSION whose file is swapped in")
    reload: Literal["restart", "admin", "none"] = "admin"
    target: Replicas | None = Field(default=None, description="replicas to reload")

    @model_validator(mode="after")
    def _swap(self) -> ModelFault:
        if (self.corruption is Corruption.SWAP) != (self.swap_with is not None):
            raise ValueError("`swap_with` goes with `corruption: swap`, and only with it")
        if self.reload != "none" and self.target is None:
            raise ValueError("name the replicas to reload in `target` (or set `reload: none`)")
        return self


class BurstFault(_Fault):
    """An extra burst of traffic on top of the load, for ``duration``."""

    kind: Literal["burst"]
    rate: Rate = Field(gt=0)
    duration: Duration = Field(gt=0)


FaultSpec = Annotated[
    ToxicFault | PartitionFault | ProcessFault | GpuFaultSpec | ModelFault | BurstFault,
    Field(discriminator="kind"),
]

# -- steady state, abort ---------------------------------------------------------------------


class Phase(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


class JsonCheck(_Strict):
    field: str = Field(description="a dotted path into the JSON answer, e.g. canary_weight")
    equals: Any = None
    at_least: float | None = None
    at_most: float | None = None


class HttpProbe(_Strict):
    kind: Literal["http"]
    name: str
    method: Literal["GET", "POST"] = "GET"
    path: str = Field(pattern=r"^/")
    body: dict[str, Any] | None = None
    admin: bool = Field(default=False, description="send the admin token")
    status: int = 200
    json_: list[JsonCheck] = Field(default_factory=list, alias="json")
    timeout: Duration = 5.0
    when: list[Phase] = Field(default_factory=lambda: [Phase.BEFORE, Phase.AFTER])


class SliProbe(_Strict):
    """The SLI of a named SLO over the last ``window`` of the run's own requests."""

    kind: Literal["sli"]
    name: str
    slo: str
    window: Duration = Field(default=5.0, gt=0)
    min: float | None = Field(default=None, ge=0, le=1, description="default: the SLO's target")
    when: list[Phase] = Field(default_factory=lambda: [Phase.DURING])


ProbeSpec = Annotated[HttpProbe | SliProbe, Field(discriminator="kind")]


class SteadyState(_Strict):
    probes: list[ProbeSpec] = Field(default_factory=list)
    interval: Duration = Field(default=1.0, gt=0, description="how often probes run during")


class BurnRateAbort(_Strict):
    kind: Literal["burn_rate"]
    slo: str
    above: float = Field(gt=0)
    window: Duration = Field(default=5.0, gt=0)
    min_requests: int = Field(default=20, ge=1)


class ErrorRatioAbort(_Strict):
    kind: Literal["error_ratio"]
    above: float = Field(gt=0, le=1)
    window: Duration = Field(default=5.0, gt=0)
    min_requests: int = Field(default=20, ge=1)
    overdue: Duration | None = Field(
        default=None,
        gt=0,
        description="a request still unanswered this long counts as failed (default: the "
        "load's timeout), so a total hang trips the abort before the first timeout",
    )


class ProbeAbort(_Strict):
    kind: Literal["probe"]
    probe: str
    failures: int = Field(default=3, ge=1, description="consecutive failures during the run")


AbortSpec = Annotated[BurnRateAbort | ErrorRatioAbort | ProbeAbort, Field(discriminator="kind")]

# -- SLOs and expectations -------------------------------------------------------------------


class SLOFile(_Strict):
    file: Path


def _slo_entry(value: Any) -> str:
    return "file" if isinstance(value, dict | SLOFile) and set(_keys(value)) == {"file"} else "doc"


def _keys(value: Any) -> list[str]:
    return list(value) if isinstance(value, dict) else ["file"]


SLOEntry = Annotated[
    Annotated[SLOFile, Tag("file")] | Annotated[SLODocument, Tag("doc")],
    Discriminator(_slo_entry),
]


class _Expectation(_Strict):
    allow_no_data: bool = Field(
        default=False,
        description="pass when there was nothing to judge (no requests, events or windows); "
        "by default `no data` fails",
    )


class SLOMet(_Expectation):
    """The SLO's SLI reached its target over the run."""

    kind: Literal["slo_met"]
    slo: str


class BudgetCeiling(_Expectation):
    kind: Literal["budget"]
    slo: str
    max_consumed: float = Field(
        ge=0,
        description="the run's budget consumed at most this: bad events / (budget × events) "
        "over the run, 0.5 = 50%",
    )


class Recovery(_Expectation):
    """After the last fault is reverted, requests succeed (2xx, not degraded) again within T."""

    kind: Literal["recovery"]
    within: Duration = Field(gt=0)
    window: Duration = Field(default=2.0, gt=0, description="successes in a row this long")


class FallbackShare(_Expectation):
    kind: Literal["fallback"]
    during: str = Field(description="the name of a fault with a duration")
    min_share: float = Field(ge=0, le=1, description="of the requests answered in the window")
    none_after: Duration | None = Field(
        default=None, description="no fallback answer this long after the fault ends"
    )


class CanaryRollback(_Expectation):
    kind: Literal["canary_rollback"]
    within: Duration = Field(gt=0)
    after: str | None = Field(default=None, description="a fault name; default the load start")


class EventExpectation(_Expectation):
    kind: Literal["event"]
    event: str = Field(description="a gateway/supervisor event kind, e.g. worker_restarted")
    present: bool = True
    min_count: int = Field(default=1, ge=1)
    details: dict[str, Any] = Field(default_factory=dict, description="fields the event must have")


class StatusShare(_Expectation):
    """At most (or at least) a share of all requests got a status class (``2xx``, ``429``...)."""

    kind: Literal["status"]
    status: str = Field(pattern=r"^([1-5]xx|[1-5]\d\d|error)$")
    max_share: float | None = Field(default=None, ge=0, le=1)
    min_share: float | None = Field(default=None, ge=0, le=1)
    during: str | None = Field(default=None, description="only in this fault's window")


ExpectSpec = Annotated[
    SLOMet
    | BudgetCeiling
    | Recovery
    | FallbackShare
    | CanaryRollback
    | EventExpectation
    | StatusShare,
    Field(discriminator="kind"),
]


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    backend: Backend = Backend.LOCAL
    url: str | None = Field(default=None, description="the service, for `backend: url`")
    stack: Path | None = Field(default=None, description="stack file; default the shipped one")
    seed: int = 0
    load: Load
    steady_state: SteadyState = SteadyState()
    faults: list[FaultSpec] = Field(default_factory=list)
    abort: list[AbortSpec] = Field(default_factory=list)
    slos: list[SLOEntry] = Field(default_factory=list)
    expect: list[ExpectSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Scenario:
        faults = self.fault_names()
        if len(set(faults)) != len(faults):
            raise ValueError(
                f"fault names repeat: {sorted({n for n in faults if faults.count(n) > 1})}"
            )
        for fault in self.faults:
            if fault.at >= self.load.duration:
                raise ValueError(
                    f"fault {self.name_of(fault)!r} starts at {fault.at:g}s, after the load ends"
                )
        problem = self.unsupported_by(self.backend)
        if problem:
            raise ValueError(problem)
        if (self.backend is Backend.URL) != (self.url is not None):
            raise ValueError("`url` goes with `backend: url`, and only with it")
        inline = [e.name for e in self.slos if isinstance(e, SLODocument)]
        probes = [p.name for p in self.steady_state.probes]
        for expect in self.expect:
            if isinstance(expect, FallbackShare | StatusShare | CanaryRollback):
                ref = expect.during if not isinstance(expect, CanaryRollback) else expect.after
                if ref is not None and ref not in faults:
                    raise ValueError(
                        f"expect {expect.kind}: no fault named {ref!r} (faults: {faults})"
                    )
            if isinstance(expect, FallbackShare) and self.fault(expect.during).end is None:
                raise ValueError(f"expect fallback: fault {expect.during!r} has no duration")
        for abort in self.abort:
            if isinstance(abort, ProbeAbort) and abort.probe not in probes:
                raise ValueError(f"abort: no probe named {abort.probe!r} (probes: {probes})")
        if not (info.context or {}).get("defer_slo_names"):
            self.check_slo_names(inline)
        return self

    def unsupported_by(self, backend: Backend) -> str | None:
        """Why this scenario cannot run on ``backend`` (None: it can)."""
        for fault in self.faults:
            if (
                isinstance(fault, PartitionFault)
                and fault.method is PartitionMethod.NETWORK
                and backend is not Backend.DOCKER
            ):
                return f"fault {self.name_of(fault)!r}: `method: network` needs the docker backend"
        if backend is not Backend.URL:
            return None
        for fault in self.faults:
            if not isinstance(fault, ToxicFault | PartitionFault | BurstFault):
                return (
                    f"fault {self.name_of(fault)!r}: the url backend takes only load and network "
                    "faults"
                )
            if isinstance(fault, ToxicFault | PartitionFault) and fault.hop != "client":
                return f"fault {self.name_of(fault)!r}: the url backend has only the `client` hop"
        return None

    def check_slo_names(self, known: list[str]) -> None:
        wanted = [
            *(e.slo for e in self.expect if isinstance(e, SLOMet | BudgetCeiling)),
            *(a.slo for a in self.abort if isinstance(a, BurnRateAbort)),
            *(p.slo for p in self.steady_state.probes if isinstance(p, SliProbe)),
        ]
        missing = sorted({n for n in wanted if n not in known})
        if missing:
            raise ValueError(f"no SLO named {', '.join(map(repr, missing))} (SLOs: {known})")

    def fault_names(self) -> list[str]:
        return [self.name_of(f) for f in self.faults]

    def name_of(self, fault: _Fault) -> str:
        index = next(i for i, f in enumerate(self.faults) if f is fault)
        return fault.name or f"{self.faults[index].kind}-{index}"

    def fault(self, name: str) -> _Fault:
        return self.faults[self.fault_names().index(name)]


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its file references resolved (SLO files read, paths absolute)."""

    scenario: Scenario
    path: Path | None
    text: str
    slos: list[SLO]
    prompts: list[str]


_PROMPTS: dict[PromptSet, list[str]] = {
    PromptSet.CHAT: [
        "What is a good name for a cat?",
        "How do I boil an egg?",
        "Tell me a fact about the sea.",
        "Why is the sky blue?",
        "What should I cook tonight?",
        "How far away is the moon?",
        "Give me a word that rhymes with light.",
        "What is the capital of France?",
    ],
    PromptSet.SHORT: ["hi", "hello", "ok", "thanks", "why", "yes"],
    PromptSet.LONG: [
        "The station keeper wrote in the log that the wind had turned in the night, that the "
        "boats had stayed in the harbour and that the lamp had burned until morning. Continue:",
        "A service that answers questions must stay up when one of its machines fails. Explain "
        "in plain words how a fallback model keeps users answered while the main model is down:",
    ],
}


def resolve_slos(entries: list[SLOFile | SLODocument], source: Path) -> list[SLO]:
    """The SLOs a file lists: inline documents, and SLO files read relative to ``source``."""
    base = source.resolve().parent
    slos: list[SLO] = []
    for entry in entries:
        if isinstance(entry, SLOFile):
            file = entry.file if entry.file.is_absolute() else base / entry.file
            try:
                slos.extend(load_slos(file))
            except SLOFileError as exc:
                raise ScenarioError(f"{source}: slos: {entry.file}:\n{exc}") from exc
        else:
            slos.append(entry.to_slo())
    return slos


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read, validate and resolve one scenario file; raises :class:`ScenarioError` listing
    every problem with file, line and field."""
    source = Path(path)
    try:
        scenario = load_yaml_document(source, Scenario, context={"defer_slo_names": True})
    except SLOFileError as exc:
        raise ScenarioError(f"invalid scenario:\n{exc}") from exc
    base = source.resolve().parent
    slos = resolve_slos(scenario.slos, source)
    names = [s.name for s in slos]
    try:
        scenario.check_slo_names(names)
    except ValueError as exc:
        raise ScenarioError(f"invalid scenario:\n{source}: {exc}") from exc
    updates: dict[str, Any] = {}
    if scenario.stack is not None and not scenario.stack.is_absolute():
        updates["stack"] = base / scenario.stack
    if updates:
        scenario = scenario.model_copy(update=updates)
    if scenario.stack is not None and not scenario.stack.is_file():
        raise ScenarioError(f"{source}: stack: no such file {scenario.stack}")
    prompts = _prompts(scenario.load.prompts, base, source)
    return LoadedScenario(
        scenario=scenario, path=source, text=source.read_text(encoding="utf-8"), slos=slos,
        prompts=prompts,
    )  # fmt: skip


def _prompts(spec: PromptSet | PromptFile, base: Path, source: Path) -> list[str]:
    if isinstance(spec, PromptSet):
        return list(_PROMPTS[spec])
    file = spec.file if spec.file.is_absolute() else base / spec.file
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{source}: load.prompts.file: cannot read {file}: {exc}") from exc
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise ScenarioError(f"{source}: load.prompts.file: {file} has no prompt")
    return prompts
