"""Scenario files: what traffic to send, what to do to the service, and what must still hold.

The models of a scenario file. Every model forbids unknown fields and every number is range
checked; what a scenario means as a whole (references, overlaps, the stack's replicas) is
checked in ``_checks``, and files are read in ``_loading``, which reports every problem with
file, line and field before anything is started.
"""

from __future__ import annotations

import os
import re
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from slo import Duration, Issue, SLODocument

from ._protocols import AnswerRules, Api
from ._shapes import Arrivals, Constant, Ramp, Shape, Spike, Step
from ._stackfile import SERVICE_NAME, link_hop
from ._toxiproxy import Stream, ToxicType
from .injectors import Corruption, GpuFault, SignalKind

_UNITS = {"s": 1.0, "m": 1 / 60, "h": 1 / 3600}
_RATE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*/\s*(s|m|h)\s*$")


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
                    "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*/\s*(s|m|h)\s*$",
                    "examples": ["20/s", "600/m"],
                },
                {"type": "number", "minimum": 0, "maximum": 100_000},
            ]
        }
    ),
]
"""Requests per second; files write ``20/s``, ``600/m`` or a bare number of requests/s."""


class _Strict(BaseModel):
    # A field's docstring is its description: the generated reference and the JSON Schema an
    # editor shows carry it.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# Numbers are not coerced from text or booleans: `max_new_tokens: '8'` or `true` is a mistake in
# the file, and the published JSON Schema (which says "integer") must agree with the models.
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
Index = Annotated[int, Strict(), Field(ge=0, le=1023)]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _name(value: str) -> str:
    if not re.fullmatch(_NAME, value):
        raise ValueError(
            f"invalid name {value[:70]!r}: 1 to 64 letters, digits, `_`, `.` or `-`, "
            "starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": _NAME})]
"""A name that also ends up in file and directory names: 1-64 characters, no path parts."""


class Backend(StrEnum):
    LOCAL = "local"  # the reference stack as processes behind Toxiproxy, on loopback
    URL = "url"  # an already running service: load and network faults only
    DOCKER = "docker"  # the reference stack as containers behind a Toxiproxy container


# -- load ------------------------------------------------------------------------------------


class ConstantShape(_Strict):
    kind: Literal["constant"] = "constant"
    """`constant`: the base rate throughout."""


class RampShape(_Strict):
    kind: Literal["ramp"]
    """`ramp`: from the base rate to `to`, linearly."""
    to: Rate
    """the rate at the ramp's end."""
    over: Duration = Field(gt=0)
    """how long the ramp takes (then the rate stays at `to`)."""


class StepAt(_Strict):
    at: Duration
    """when the rate changes, on the load's clock."""
    rate: Rate
    """the rate from then on."""


class StepShape(_Strict):
    kind: Literal["step"]
    """`step`: the rate changes at given times."""
    steps: list[StepAt] = Field(min_length=1)
    """each change: when, and the rate from then on."""

    @field_validator("steps")
    @classmethod
    def _sorted(cls, steps: list[StepAt]) -> list[StepAt]:
        if [s.at for s in steps] != sorted(s.at for s in steps):
            raise ValueError("steps must be in order of `at`")
        return steps


class SpikeAt(_Strict):
    at: Duration
    """when the spike starts, on the load's clock."""
    length: Duration = Field(gt=0)
    """how long it lasts."""
    factor: Number = Field(gt=0, le=1000)
    """the base rate is multiplied by this."""


class SpikeShape(_Strict):
    kind: Literal["spike"]
    """`spike`: the base rate times a factor, for a while."""
    spikes: list[SpikeAt] = Field(min_length=1)
    """when, how long and how high each spike is."""


ShapeSpec = Annotated[
    ConstantShape | RampShape | StepShape | SpikeShape, Field(discriminator="kind")
]


class PromptSet(StrEnum):
    CHAT = "chat"  # short everyday questions
    SHORT = "short"  # one or two words
    LONG = "long"  # paragraph-long prompts


class PromptFile(_Strict):
    file: Path = Field(description="a text file, one prompt per line (blank lines skipped)")


_RETRY_ON = r"^([45]xx|[45]\d\d|error|timeout|connect|reset|stream|tls)$"


def _status_text(value: Any) -> Any:
    # `503` is a number in YAML; a status is matched as text, as `5xx` is.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


RetryOn = Annotated[
    str,
    BeforeValidator(_status_text),
    Field(pattern=_RETRY_ON),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _RETRY_ON},
                {"type": "integer", "minimum": 400, "maximum": 599},
            ]
        }
    ),
]


class Backoff(_Strict):
    """How long a client waits before its next attempt: ``initial`` × ``multiplier``^(n-1)
    before attempt n+1, at most ``max``; with ``jitter``, a uniform draw between 0 and that
    (AWS's "full jitter"), from the scenario seed."""

    initial: Duration = Field(default=0.0, ge=0, le=60)
    """the wait before the second attempt; 0 is a naive client that retries at once."""
    multiplier: Number = Field(default=2.0, ge=1, le=10)
    """each later wait is this many times the one before."""
    max: Duration = Field(default=10.0, gt=0, le=600)
    """no wait is longer than this."""
    jitter: bool = False
    """draw each wait uniformly between 0 and its value, so clients do not retry in step."""

    def wait(self, retry: int, draw: float) -> float:
        """The wait before retry number ``retry`` (1 is the second attempt); ``draw`` is a
        uniform number in [0, 1), used with jitter."""
        base = min(self.max, self.initial * self.multiplier ** (retry - 1))
        return base * draw if self.jitter else base


class RetryPolicy(_Strict):
    """A client that tries again: on which answers, how often, how long it waits, whether it
    honours ``Retry-After``. Every attempt is recorded; the request's outcome is its last."""

    # Not `on`: YAML 1.1 reads an unquoted `on` key as the boolean true.
    when: list[RetryOn] = Field(
        default_factory=lambda: ["429", "503", "connect", "reset"], min_length=1
    )
    """statuses (`503`, `5xx`) and failures (`timeout`, `connect`, `reset`, `stream`, `tls`,
    or `error` for any) that make it try again."""
    max_attempts: Int = Field(default=3, ge=2, le=20)
    """attempts in all, the first one included."""
    backoff: Backoff = Backoff()
    """the waits between attempts (default: none, a naive client)."""
    retry_after: bool = True
    """wait at least what an answer's `Retry-After` header says (seconds or an HTTP date)."""

    def retries(self, status: int | None, error: str | None) -> bool:
        """Whether an attempt that ended so is tried again (if attempts are left)."""
        for pattern in self.when:
            if error is not None:
                if pattern in ("error", error):
                    return True
            elif status is not None and (
                str(status) == pattern or (pattern.endswith("xx") and str(status)[0] == pattern[0])
            ):
                return True
        return False


class CancelRule(_Strict):
    """A client that walks away: it closes the connection after ``after_tokens`` streamed
    tokens or ``after`` seconds from its request's send, whichever is given. The request is
    recorded as cancelled, not failed, and judged by no SLO or expectation."""

    after_tokens: Int | None = Field(default=None, ge=1, le=100_000)
    """streamed tokens read before it closes (streamed loads only)."""
    after: Duration | None = Field(default=None, gt=0, le=3600)
    """seconds after its send before it closes, whatever came by then."""

    @model_validator(mode="after")
    def _one_rule(self) -> CancelRule:
        if (self.after_tokens is None) == (self.after is None):
            raise ValueError("give `after_tokens` or `after`, one of them")
        return self


class ClientGroup(_Strict):
    """A share of the load's requests sent by clients that behave alike: retrying, cancelling,
    or both. Requests are dealt to groups by a draw from the scenario seed; the rest of the
    load is plain clients (one attempt, never cancelled)."""

    name: Name
    """how the report and the `amplification` expectation name these clients."""
    share: Number = Field(gt=0, le=1)
    """the share of the load's requests they send."""
    retry: RetryPolicy | None = None
    """how they retry (default: never)."""
    cancel: CancelRule | None = None
    """when they walk away (default: never)."""


class Judged(StrEnum):
    REQUESTS = "requests"  # each logical request once, with its last attempt's outcome
    ATTEMPTS = "attempts"  # every attempt, as the service saw them


class Load(_Strict):
    rate: Rate = Field(description="the base arrival rate, e.g. 20/s")
    shape: ShapeSpec = ConstantShape()
    """how the rate changes over time (default constant)."""
    arrivals: Arrivals = Arrivals.UNIFORM
    """`uniform` (evenly spaced) or `poisson` (random gaps, the same mean)."""
    duration: Duration = Field(gt=0, le=3600)
    """how long requests are sent, e.g. `60s`."""
    prompts: PromptSet | PromptFile = PromptSet.CHAT
    """a built-in prompt set (`chat`, `short`, `long`) or `{file: …}`."""
    max_new_tokens: Int = Field(
        default=8, ge=1, le=100_000, description="sent as `max_tokens` to OpenAI APIs"
    )
    temperature: Number | None = Field(
        default=None, ge=0, le=2, description="sampling temperature; default: the server's"
    )
    stream: bool = False
    """stream the answers (SSE), measuring TTFT and every token gap."""
    user_share: Number = Field(default=0.0, ge=0, le=1, description="requests carrying a user")
    users: Int = Field(default=200, ge=1, le=1_000_000, description="distinct users drawn from")
    timeout: Duration = Field(default=10.0, gt=0)
    """a request with no whole answer by then fails as `timeout`."""
    max_lag: Duration = Field(
        default=0.050,
        gt=0,
        description="the run is invalid when the generator's schedule lag p99 exceeds this "
        "(lag adds to every measured latency; 50 ms is a tenth of a 500 ms bound)",
    )
    max_cpu: Number = Field(
        default=0.9,
        gt=0,
        le=1,
        description="the run is invalid when the generator used more than this share of a core",
    )
    clients: list[ClientGroup] = Field(default_factory=list)
    """groups of clients that retry or cancel, each sending a share of the requests."""
    judge: Judged = Judged.REQUESTS
    """what SLOs and expectations judge: `requests` (each once, as the user saw it, after its
    retries) or `attempts` (every attempt, as the service saw it)."""
    shards: Int = Field(default=1, ge=1, le=256)
    """load generator processes on a Ray cluster, one CPU each (`1`: this process, no Ray);
    arrival k of the schedule is sent by shard k mod N (needs the `distributed` extra)."""
    ray_address: str | None = Field(default=None, min_length=1, max_length=512,
                                    pattern=r"^\S+$")  # fmt: skip
    """the Ray cluster the shards join (`auto`, `HOST:PORT`, `ray://HOST:PORT`); default:
    `RAY_ADDRESS`, else a local cluster started and stopped by the run."""

    @model_validator(mode="after")
    def _clients(self) -> Load:
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client groups need names of their own: {names}")
        if sum(c.share for c in self.clients) > 1 + 1e-9:
            shares = " + ".join(f"{c.share:g}" for c in self.clients)
            raise ValueError(f"client groups share more than all the requests: {shares} > 1")
        if not self.stream and any(c.cancel and c.cancel.after_tokens for c in self.clients):
            raise ValueError("`cancel.after_tokens` counts streamed tokens: set `stream: true`")
        return self

    def to_shape(self) -> Shape:
        shape = self.shape
        if isinstance(shape, RampShape):
            return Ramp(self.rate, shape.to, shape.over)
        if isinstance(shape, StepShape):
            return Step(self.rate, tuple((s.at, s.rate) for s in shape.steps))
        if isinstance(shape, SpikeShape):
            return Spike(self.rate, tuple((s.at, s.length, s.factor) for s in shape.spikes))
        return Constant(self.rate)


# -- the service's API ------------------------------------------------------------------------

_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
_RESERVED_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}


class DegradedSignal(_Strict):
    """How the service marks an answer as degraded (served by a fallback), when not with the
    native ``degraded`` field."""

    header: str | None = Field(
        default=None,
        pattern=_HEADER,
        description="a response header whose value `true`, `1` or `yes` marks it degraded",
    )
    other_model: bool = Field(
        default=False,
        description="an answer whose `model` is not the one asked for (`service.model`) is "
        "degraded",
    )


class Service(_Strict):
    """What the service speaks: its API, the model to ask for, how to authenticate, where its
    health check is."""

    api: Api = Field(
        default=Api.ICHAOS,
        description="`ichaos` (POST /v1/generate), `openai-completions` (POST /v1/completions) "
        "or `openai-chat` (POST /v1/chat/completions)",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the `model` every request asks for (OpenAI APIs need one)",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="the environment variable holding the API key, sent as a Bearer token "
        "(the key itself is never written anywhere)",
    )
    headers: dict[
        Annotated[str, Field(pattern=_HEADER)], Annotated[str, Field(max_length=1024)]
    ] = Field(default_factory=dict, description="extra headers on every request")
    health: str | None = Field(
        default=None,
        pattern=r"^/[^\s]*$",
        description="the path that answers once the service is up (default: `/healthz` for "
        "`ichaos`, `/v1/models` for OpenAI APIs)",
    )
    degraded: DegradedSignal = DegradedSignal()
    """how an answer says it came from a fallback."""
    ca_file: Path | None = Field(
        default=None,
        description="PEM certificates to verify an https service with, instead of the "
        "system's (relative to the scenario file)",
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        reserved = sorted(h for h in headers if h.lower() in _RESERVED_HEADERS | {"authorization"})
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: set by ichaos itself (the API key: `api_key_env`)"
            )
        return headers

    @model_validator(mode="after")
    def _model_for_openai(self) -> Service:
        if self.api.openai and self.model is None:
            raise ValueError(f"`api: {self.api.value}` needs the `model` to ask for")
        if self.degraded.other_model and self.model is None:
            raise ValueError("`degraded.other_model` compares with `model`: give it")
        return self

    @property
    def health_path(self) -> str:
        return self.health or ("/v1/models" if self.api.openai else "/healthz")

    def api_key(self) -> str | None:
        """The key from its environment variable; raises ValueError naming a missing one."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(f"service.api_key_env: ${self.api_key_env} is not set")
        return key

    def request_headers(self) -> dict[str, str]:
        key = self.api_key()
        return {**self.headers, **({"Authorization": f"Bearer {key}"} if key else {})}

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context https connections verify with: the system's CAs, or ``ca_file``'s."""
        return None if self.ca_file is None else ssl.create_default_context(cafile=self.ca_file)

    def answer_rules(self) -> AnswerRules:
        return AnswerRules(
            header=self.degraded.header, asked=self.model if self.degraded.other_model else None
        )


# -- targets ---------------------------------------------------------------------------------


class Pool(StrEnum):
    PRIMARY = "primary"
    CANARY = "canary"
    FALLBACK = "fallback"


class Replicas(_Strict):
    """Which workers: ``index`` (one or several), ``random`` (that many, drawn with the
    scenario seed) or, with neither, every replica of the pool."""

    pool: Pool
    """`primary`, `canary` or `fallback`."""
    index: (
        Annotated[
            Annotated[Index, Tag("one")] | Annotated[list[Index], Field(min_length=1), Tag("list")],
            Discriminator(lambda v: "list" if isinstance(v, list | tuple) else "one"),
        ]
        | None
    ) = None
    """one replica (`0`) or several (`[0, 1]`) of the pool."""
    random: Int | None = Field(default=None, ge=1, le=1024)
    """that many replicas, drawn with the scenario's seed."""

    @model_validator(mode="after")
    def _one_way(self) -> Replicas:
        if self.index is not None and self.random is not None:
            raise ValueError("give `index` or `random`, not both")
        return self

    def indices(self) -> list[int] | None:
        """The replicas named by index; None for every replica or a random draw."""
        if self.index is None:
            return None
        return list(self.index) if isinstance(self.index, list) else [self.index]

    def describe(self) -> str:
        if self.random is not None:
            return f"{self.random} random {self.pool.value}"
        if self.index is None:
            return f"every {self.pool.value}"
        return f"{self.pool.value}{self.index if isinstance(self.index, list) else [self.index]}"


class Gateway(_Strict):
    gateway: Literal[True]
    """`true`: the gateway process (or container)."""


_SERVICE = SERVICE_NAME  # the stack file's spelling of a service name


class ServiceRef(_Strict):
    """A service of a services stack file, by name."""

    service: str = Field(pattern=_SERVICE)
    """the service's name in the stack file."""

    def describe(self) -> str:
        return f"service {self.service}"


class Link(_Strict):
    """A link between two services of a services stack file (its own Toxiproxy proxy)."""

    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from", pattern=_SERVICE)
    """the service that connects."""
    to: str = Field(pattern=_SERVICE)
    """the service it connects to."""

    @property
    def key(self) -> str:
        return link_hop(self.from_, self.to)


_INDEX_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 1023}


def _hop(value: Any) -> Any:
    """``client``, ``primary[0]``-style shorthand for a gateway→worker hop, or ``router->model``
    for a link of a services stack file."""
    if isinstance(value, str) and "->" in value:
        source, _, dest = (part.strip() for part in value.partition("->"))
        return {"from": source, "to": dest}
    if isinstance(value, str) and value != "client":
        match = re.fullmatch(r"(primary|canary|fallback)(?:\[([0-9]{1,4})\])?", value)
        if not match:
            raise ValueError(
                f"invalid hop {value!r}: `client` (client → gateway), a worker link such as "
                "`primary[0]`, `canary[0]`, `fallback[0]` or `primary` (every replica), or a "
                "link of a services stack file such as `router->model`"
            )
        index = None if match[2] is None else int(match[2])
        return {"pool": match[1], "index": index}
    return value


def _hop_kind(value: Any) -> str:
    if isinstance(value, Link) or (isinstance(value, dict) and "pool" not in value
                                   and ("from" in value or "from_" in value)):  # fmt: skip
        return "link"
    return "replicas" if isinstance(value, dict | Replicas) else "client"


Hop = Annotated[
    Annotated[Literal["client"], Tag("client")]
    | Annotated[Replicas, Tag("replicas")]
    | Annotated[Link, Tag("link")],
    Discriminator(_hop_kind),
    BeforeValidator(_hop),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^(client|(primary|canary|fallback)(\[[0-9]{1,4}\])?"
                    r"|[A-Za-z0-9][A-Za-z0-9_-]{0,63} *-> *[A-Za-z0-9][A-Za-z0-9_-]{0,63})$",
                    "examples": ["client", "primary[0]", "primary", "router->model"],
                },
                {
                    "type": "object",
                    "properties": {
                        "from": {"type": "string", "pattern": _SERVICE},
                        "to": {"type": "string", "pattern": _SERVICE},
                    },
                    "required": ["from", "to"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {
                        "pool": {"enum": [p.value for p in Pool]},
                        "index": {
                            "anyOf": [
                                _INDEX_SCHEMA,
                                {"type": "array", "items": _INDEX_SCHEMA, "minItems": 1},
                                {"type": "null"},
                            ]
                        },
                        "random": {"type": ["integer", "null"], "minimum": 1, "maximum": 1024},
                    },
                    "required": ["pool"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]


# -- faults ----------------------------------------------------------------------------------


def _target_kind(value: Any) -> str:
    if isinstance(value, Gateway) or (isinstance(value, dict) and "gateway" in value):
        return "gateway"
    if isinstance(value, ServiceRef) or (isinstance(value, dict) and "service" in value):
        return "service"
    return "replicas"


ProcessTarget = Annotated[
    Annotated[Replicas, Tag("replicas")]
    | Annotated[Gateway, Tag("gateway")]
    | Annotated[ServiceRef, Tag("service")],
    Discriminator(_target_kind),
]
"""Workers (``{pool: primary, index: 0}``), the gateway (``{gateway: true}``) or a service of a
services stack file (``{service: model}``)."""


class _Fault(_Strict):
    name: Name | None = None
    """how the timeline, expectations and the report name it (default `KIND-INDEX`)."""
    at: Duration = Field(description="seconds after the load starts")
    duration: Duration | None = Field(default=None, gt=0, description="reverted after this")

    @property
    def end(self) -> float | None:
        return None if self.duration is None else self.at + self.duration


class ToxicFault(_Fault):
    """A Toxiproxy toxic on one hop: latency (with jitter), bandwidth, slow_close, timeout,
    reset_peer, slicer or limit_data, on either stream, with a toxicity."""

    kind: Literal["toxic"]
    """`toxic`: a Toxiproxy toxic on a hop."""
    hop: Hop
    """`client`, replicas of a pool (their gateway→worker links), or a link of a services
    stack file (`router->model`)."""
    toxic: ToxicType
    """the toxic's type: latency, bandwidth, timeout, reset_peer, slow_close, slicer, limit_data."""
    stream: Stream = Stream.DOWNSTREAM
    """`downstream` (answers) or `upstream` (requests)."""
    toxicity: Number = Field(default=1.0, ge=0, le=1)
    """the share of connections it affects (0 to 1)."""
    attributes: dict[str, ToxicValue] = Field(default_factory=dict)
    """the toxic's own attributes, e.g. `{latency: 300, jitter: 50}` (ms, bytes)."""

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, attributes: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        toxic = info.data.get("toxic")
        if toxic is None:  # already reported
            return attributes
        allowed = _TOXIC_ATTRIBUTES[toxic]
        unknown = sorted(set(attributes) - allowed)
        if unknown:
            raise ValueError(
                f"{toxic.value} has no attribute {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(allowed)) or 'none'}"
            )
        for key, value in attributes.items():
            if key in _TOXIC_MILLISECONDS and value > MAX_FAULT_MS:
                raise ValueError(
                    f"{key} of {value} ms is longer than an hour (at most {MAX_FAULT_MS})"
                )
        return attributes


MAX_FAULT_MS = 3_600_000
ToxicValue = Annotated[int, Strict(), Field(ge=0, le=2**31 - 1)]
"""Toxiproxy's attributes are milliseconds, KB/s or bytes: whole and never negative."""
_TOXIC_MILLISECONDS = {"latency", "jitter", "delay", "timeout"}

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
    """`partition`: cut a hop off."""
    hop: Hop
    """`client`, replicas of a pool (their gateway→worker links), or a link of a services
    stack file (`router->model`)."""
    method: PartitionMethod = PartitionMethod.PROXY
    """`proxy` (the hop's Toxiproxy proxy disabled) or `network` (docker: the container
    disconnected)."""

    @model_validator(mode="after")
    def _network_cuts_replicas(self) -> PartitionFault:
        if self.method is PartitionMethod.NETWORK and self.hop == "client":
            raise ValueError("`method: network` cuts replicas off; the client hop has no container")
        if self.method is PartitionMethod.NETWORK and isinstance(self.hop, Link):
            raise ValueError(
                "`method: network` cuts replicas' containers off; a link has none: "
                "use `method: proxy` (the default)"
            )
        return self


class ProcessFault(_Fault):
    """SIGKILL, SIGTERM or SIGSTOP (pause, resumed after ``duration``) of workers or the gateway."""

    kind: Literal["process"]
    """`process`: a signal to workers or to the gateway."""
    signal: SignalKind
    """`kill` (SIGKILL), `terminate` (SIGTERM) or `pause` (SIGSTOP, resumed with SIGCONT when
    reverted)."""
    target: ProcessTarget
    """replicas of a pool, `{gateway: true}`, or a service of a services stack file
    (`{service: model}`)."""

    @model_validator(mode="after")
    def _pause_needs_duration(self) -> ProcessFault:
        if self.signal is SignalKind.PAUSE and self.duration is None:
            raise ValueError("a pause needs a `duration` (when to resume)")
        return self


class ContainerAction(StrEnum):
    STOP = "stop"  # the engine stops the container (SIGTERM, then SIGKILL); started again
    RESTART = "restart"  # the engine restarts it at once; nothing to revert
    DISCONNECT = "disconnect"  # off the run's network, connected again when reverted


class ContainerFault(_Fault):
    """What the engine does to containers (docker backend): stop them for a while, restart
    them, or take them off the run's network for a while."""

    kind: Literal["container"]
    """`container`: an engine action on containers."""
    action: ContainerAction
    """`stop` (down until reverted: no restart policy brings back a container the engine was
    asked to stop), `restart`, or `disconnect` (off the run's network until reverted)."""
    target: ProcessTarget
    """replicas of a pool, `{gateway: true}`, or a service of a stack file's compose file
    (`{service: model}`)."""

    @model_validator(mode="after")
    def _duration_by_action(self) -> ContainerFault:
        if self.action is ContainerAction.RESTART and self.duration is not None:
            raise ValueError("a restart has no `duration`: it is over when the container is back")
        if self.action is not ContainerAction.RESTART and self.duration is None:
            raise ValueError(f"a {self.action.value} needs a `duration` (when to undo it)")
        return self


class GpuFaultSpec(_Fault):
    """A worker's fault hook: gpu_error (the worker dies on its next batch), hang, slow, oom."""

    kind: Literal["gpu"]
    """`gpu`: a GPU failure through the worker's fault hook."""
    fault: GpuFault
    """`gpu_error`, `hang`, `slow` or `oom`."""
    target: Annotated[
        Annotated[Replicas, Tag("replicas")] | Annotated[ServiceRef, Tag("service")],
        Discriminator(_target_kind),
    ]
    """the replicas it happens on, or a service of a services stack file that declares
    `fault_hooks` (`{service: worker}`)."""
    params: dict[str, Int] = Field(
        default_factory=dict,
        description="`slow` takes ms_per_token (1-60000, required), `oom` count (1-1000000)",
    )

    @field_validator("params")
    @classmethod
    def _params(cls, params: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        fault = info.data.get("fault")
        if fault is None:  # already reported
            return params
        allowed = _GPU_PARAMS[fault]
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            takes = ", ".join(sorted(allowed)) or "no parameter"
            raise ValueError(f"{fault.value} has no parameter {', '.join(unknown)}; "
                             f"it takes {takes}")  # fmt: skip
        for key, (low, high, required) in allowed.items():
            value = params.get(key)
            if value is None:
                if required:
                    raise ValueError(f"{fault.value} needs {key} ({low}-{high})")
            elif not low <= value <= high:
                raise ValueError(f"{key} must be within {low}-{high} (got {value})")
        return params


_GPU_PARAMS: dict[GpuFault, dict[str, tuple[int, int, bool]]] = {
    GpuFault.GPU_ERROR: {},
    GpuFault.HANG: {},
    GpuFault.SLOW: {"ms_per_token": (1, 60_000, True)},
    GpuFault.OOM: {"count": (1, 1_000_000, False)},
}


_MODEL_REF = r"^[a-z0-9][a-z0-9_.-]{0,63}:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _inside_model(value: str) -> str:
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or any(p in {"", ".", ".."} for p in parts):
        raise ValueError(
            f"{value!r} is not a path inside the model's directory: give a relative path "
            "such as model.safetensors, without `..`, `.` or a leading `/`"
        )
    return value


class ModelFault(_Fault):
    """Damage a registry file, then make the replicas serving it reload (restart or admin reload);
    the original bytes come back on revert, checked by sha256."""

    kind: Literal["model"]
    """`model`: damage a model file in the registry (restored byte for byte)."""
    model: str | None = Field(default=None, pattern=_MODEL_REF)
    """NAME:VERSION of the registry (the reference stack)."""
    service: str | None = Field(default=None, pattern=_SERVICE)
    """a service of a services stack file: the file is in its `model_dir`, and `reload:
    restart` restarts that service."""
    file: str = Field(
        default="model.safetensors",
        description="a path inside the model's directory (no `..`, not absolute)",
    )
    corruption: Corruption = Corruption.BIT_FLIP
    """`bit_flip`, `truncate` or `swap` (with `swap_with`)."""
    swap_with: str | None = Field(
        default=None,
        pattern=_MODEL_REF,
        description="NAME:VERSION whose file is swapped in",
    )
    reload: Literal["restart", "admin", "none"] = "admin"
    """how the replicas see it: `admin` (a reload request), `restart` (the process) or `none`."""
    target: Replicas | None = Field(default=None, description="replicas to reload")

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        return _inside_model(value)

    @model_validator(mode="after")
    def _swap(self) -> ModelFault:
        if (self.model is None) == (self.service is None):
            raise ValueError("give the registry's `model` or a stack file's `service`, one of them")
        if (self.corruption is Corruption.SWAP) != (self.swap_with is not None):
            raise ValueError("`swap_with` goes with `corruption: swap`, and only with it")
        if self.service is not None:
            if self.swap_with is not None:
                raise ValueError("`swap_with` names a registry model: not for a `service`")
            if self.target is not None:
                raise ValueError("a `service`'s model fault restarts that service: no `target`")
            if self.reload == "admin":
                raise ValueError("a service reloads by `reload: restart` (or `none`), not `admin`")
            return self
        if self.reload != "none" and self.target is None:
            raise ValueError("name the replicas to reload in `target` (or set `reload: none`)")
        return self


class BurstFault(_Fault):
    """An extra burst of traffic on top of the load, for ``duration``."""

    kind: Literal["burst"]
    """`burst`: extra traffic on top of the load."""
    rate: Rate = Field(gt=0)
    """the burst's own arrival rate, e.g. `40/s`."""
    duration: Duration = Field(gt=0)
    """how long the burst sends."""


class StreamEffect(StrEnum):
    CUT = "cut"  # the response ends after `after` events (FIN, or RST with `reset`)
    STALL = "stall"  # `delay_ms` of silence after `after` events
    SLOW = "slow"  # `delay_ms` after every event
    CORRUPT = "corrupt"  # event `event`'s data damaged, same length
    DROP_DONE = "drop_done"  # the final event (`[DONE]`, native `done`) removed
    STATUS = "status"  # the answer replaced by `status` (with `Retry-After`), connection closed


_STREAM_FIELDS: dict[StreamEffect, tuple[set[str], set[str]]] = {
    # effect: (required, allowed besides them)
    StreamEffect.CUT: ({"after"}, {"reset"}),
    StreamEffect.STALL: ({"after", "delay_ms"}, set()),
    StreamEffect.SLOW: ({"delay_ms"}, set()),
    StreamEffect.CORRUPT: ({"event"}, {"corrupt"}),
    StreamEffect.DROP_DONE: (set(), set()),
    StreamEffect.STATUS: ({"status"}, {"retry_after"}),
}


class StreamFault(_Fault):
    """A fault inside the HTTP answers on a hop, made by ichaos's toxics in the project's
    Toxiproxy build: a token stream cut, stalled, slowed or corrupted, its final event dropped,
    or the answer replaced by an error status. Each answer is picked with probability
    ``share``, so a share of *requests* is hit even on kept-alive connections."""

    kind: Literal["stream"]
    """`stream`: a fault inside the answers on a hop."""
    hop: Hop
    """`client`, replicas of a pool (their gateway→worker links), or a link of a services
    stack file (`router->model`)."""
    effect: StreamEffect
    """`cut`, `stall`, `slow`, `corrupt`, `drop_done` or `status`. Stream effects act on
    event-stream and NDJSON answers only; `status` on every answer."""
    share: Number = Field(default=1.0, gt=0, le=1)
    """the share of answers (requests) it hits, drawn per answer from the scenario seed."""
    after: Annotated[int, Strict(), Field(ge=0, le=1_000_000)] | None = None
    """`cut`: events sent before the end (0: right after the head); `stall`: events sent
    before the silence (1 or more)."""
    reset: bool = False
    """`cut`: end with a TCP reset instead of a clean close (connections opened after the
    fault applied; one already open closes cleanly)."""
    delay_ms: Annotated[int, Strict(), Field(ge=1, le=MAX_FAULT_MS)] | None = None
    """`stall`: the silence; `slow`: the pause after every event (ms)."""
    event: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] | None = None
    """`corrupt`: the event damaged (1 is the first)."""
    corrupt: Literal["json", "utf8"] = "json"
    """`corrupt`: its data's first byte becomes `}` (malformed JSON) or 0xFF (invalid UTF-8)."""
    status: Annotated[int, Strict(), Field(ge=400, le=599)] | None = None
    """`status`: the status answered instead, e.g. 429, 503 or 500."""
    retry_after: Annotated[int, Strict(), Field(ge=0, le=86_400)] | None = None
    """`status`: a `Retry-After` header, in seconds."""

    @model_validator(mode="after")
    def _fields_of_effect(self) -> StreamFault:
        required, optional = _STREAM_FIELDS[self.effect]
        given = {f for f in ("after", "delay_ms", "event", "status", "retry_after")
                 if getattr(self, f) is not None}  # fmt: skip
        given |= {f for f in ("reset",) if getattr(self, f)}
        given |= {"corrupt"} if "corrupt" in self.model_fields_set else set()
        missing, extra = sorted(required - given), sorted(given - required - optional)
        if missing:
            raise ValueError(f"a stream {self.effect.value} needs {', '.join(missing)}")
        if extra:
            takes = ", ".join(sorted(required | optional)) or "nothing more"
            raise ValueError(
                f"a stream {self.effect.value} takes no {', '.join(extra)} (it takes {takes})"
            )
        if self.effect is StreamEffect.STALL and self.after == 0:
            raise ValueError(
                "a stall after 0 events is a delay before the answer: use a latency toxic"
            )
        return self


FaultSpec = Annotated[
    ToxicFault
    | PartitionFault
    | ProcessFault
    | ContainerFault
    | GpuFaultSpec
    | ModelFault
    | BurstFault
    | StreamFault,
    Field(discriminator="kind"),
]

# -- the service's own metrics ---------------------------------------------------------------

_METRIC = r"^[a-zA-Z_:][a-zA-Z0-9_:]{0,199}$"
_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]{0,99}$"


class MetricSource(_Strict):
    """Where Prometheus text is scraped from: a path on the service's own address (not through
    the client hop, so a partition there does not blind the scrape), each replica of a pool
    of the reference stack, or an absolute URL."""

    name: Name = Field(description="how series and the report name this source")
    path: str = Field(
        default="/metrics",
        pattern=r"^/[^\s]*$",
        description="the path scraped on the service (or on each replica)",
    )
    replicas: Pool | None = Field(
        default=None, description="scrape each replica of this pool instead of the service"
    )
    service: str | None = Field(
        default=None,
        pattern=_SERVICE,
        description="scrape this service of a services stack file (at its `metrics` path "
        "unless `path` is given)",
    )
    url: str | None = Field(
        default=None, description="an absolute http(s) URL to scrape instead of the service"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @model_validator(mode="after")
    def _one_place(self) -> MetricSource:
        if self.url is not None and (self.replicas is not None or "path" in self.model_fields_set):
            raise ValueError("give `url`, or `path` and/or `replicas`, not both")
        if self.service is not None and (self.replicas is not None or self.url is not None):
            raise ValueError("give `service` alone (with a `path` at most)")
        return self


class Reading(StrEnum):
    """What a series reads from the matching samples of each scrape."""

    VALUE = "value"  # the sample's value (a gauge, or a counter's running total)
    RATE = "rate"  # a counter's increase per second since the previous scrape (resets allowed)
    MEAN = "mean"  # a histogram's or summary's mean observation since the previous scrape


class Aggregate(StrEnum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"
    MEAN = "mean"


class MetricSeries(_Strict):
    """One figure from the scraped metrics, sampled every interval on the run's time axis."""

    name: Name = Field(description="how probes, aborts, expectations and the report name it")
    metric: str = Field(
        pattern=_METRIC,
        description="the metric as exposed, e.g. `vllm:num_requests_waiting`; a counter may be "
        "named with or without `_total`, a histogram by its base name (`read: mean`)",
    )
    labels: dict[Annotated[str, Field(pattern=_LABEL)], Annotated[str, Field(max_length=256)]] = (
        Field(default_factory=dict, description="labels a sample must carry (others may differ)")
    )
    source: str | None = Field(default=None, description="a source's name; default: every source")
    read: Reading = Field(
        default=Reading.VALUE,
        description="`value`, `rate` (a counter's increase per second between scrapes) or "
        "`mean` (a histogram's mean observation between scrapes)",
    )
    aggregate: Aggregate | None = Field(
        default=None,
        description="how matching samples (labels, replicas) combine: sum (default), max, min, "
        "mean; `read: mean` pools them (Δsum / Δcount) and takes none",
    )
    chart: bool = Field(default=True, description="draw it in the report")

    @model_validator(mode="after")
    def _pooled_mean(self) -> MetricSeries:
        if self.read is Reading.MEAN and self.aggregate is not None:
            raise ValueError("`read: mean` pools every matching sample (Δsum / Δcount): "
                             "leave `aggregate` out")  # fmt: skip
        return self

    @property
    def combine(self) -> Aggregate:
        return self.aggregate or Aggregate.SUM


class Metrics(_Strict):
    """The service's own Prometheus metrics, scraped while the run goes."""

    interval: Duration = Field(default=1.0, ge=0.1, le=60, description="time between scrapes")
    timeout: Duration = Field(default=2.0, gt=0, le=30, description="for each scrape")
    sources: list[MetricSource] = Field(
        default_factory=lambda: [MetricSource(name="service")],
        min_length=1,
        max_length=16,
        description="default: the service's `/metrics`",
    )
    series: list[MetricSeries] = Field(min_length=1, max_length=64)
    """the figures read from each scrape."""

    def series_named(self, name: str) -> MetricSeries | None:
        return next((s for s in self.series if s.name == name), None)


# -- steady state, abort ---------------------------------------------------------------------


class Phase(StrEnum):
    BEFORE = "before"
    DURING = "during"
    AFTER = "after"


class JsonCheck(_Strict):
    field: str = Field(
        pattern=r"^[^.\s]+(\.[^.\s]+)*$",
        description="a dotted path into the JSON answer, e.g. canary_weight",
    )
    equals: Any = None
    """the field must equal this."""
    at_least: Number | None = None
    """the field must be a number at least this."""
    at_most: Number | None = None
    """the field must be a number at most this."""


class HttpProbe(_Strict):
    kind: Literal["http"]
    """`http`: a request to the service, through the client hop."""
    name: Name
    """how aborts and the report name it."""
    method: Literal["GET", "POST"] = "GET"
    """`GET` or `POST`."""
    path: str = Field(pattern=r"^/")
    """the path asked, e.g. `/readyz`."""
    body: dict[str, Any] | None = None
    """a JSON body to send."""
    admin: bool = Field(default=False, description="send the admin token")
    status: Int = Field(default=200, ge=100, le=599)
    """the status the answer must have."""
    json_: list[JsonCheck] = Field(default_factory=list, alias="json")
    """checks on fields of the JSON answer."""
    timeout: Duration = 5.0
    """how long the answer may take."""
    when: list[Phase] = Field(default_factory=lambda: [Phase.BEFORE, Phase.AFTER])
    """the phases it runs in: `before`, `during`, `after`."""


class SliProbe(_Strict):
    """The SLI of a named SLO over the last ``window`` of the run's own requests."""

    kind: Literal["sli"]
    """`sli`: an SLO's SLI over the run's recent requests."""
    name: Name
    """how aborts and the report name it."""
    slo: str
    """the SLO whose SLI is probed."""
    window: Duration = Field(default=5.0, gt=0)
    """the recent window it is measured over."""
    min: Number | None = Field(default=None, ge=0, le=1, description="default: the SLO's target")
    when: list[Phase] = Field(default_factory=lambda: [Phase.DURING])
    """the phases it runs in (default `during`)."""


class _Bounds(_Strict):
    at_most: Number | None = None
    """the value must be at most this."""
    at_least: Number | None = None
    """the value must be at least this."""

    @model_validator(mode="after")
    def _a_bound(self) -> _Bounds:
        if self.at_most is None and self.at_least is None:
            raise ValueError("give `at_most`, `at_least` or both")
        return self

    def holds(self, value: float) -> bool:
        return (self.at_most is None or value <= self.at_most) and (
            self.at_least is None or value >= self.at_least
        )

    def bounds_text(self) -> str:
        parts = [f"≤ {self.at_most:g}" if self.at_most is not None else "",
                 f"≥ {self.at_least:g}" if self.at_least is not None else ""]  # fmt: skip
        return " and ".join(p for p in parts if p)


class MetricProbe(_Bounds):
    """A series of the scraped metrics within bounds: during the run its latest sample, before
    and after a fresh scrape."""

    kind: Literal["metric"]
    """`metric`: a scraped series within bounds."""
    name: Name
    """how aborts and the report name it."""
    series: str = Field(description="a series of `metrics`")
    when: list[Phase] = Field(default_factory=lambda: [Phase.DURING])
    """the phases it runs in (default `during`)."""


ProbeSpec = Annotated[HttpProbe | SliProbe | MetricProbe, Field(discriminator="kind")]


class SteadyState(_Strict):
    probes: list[ProbeSpec] = Field(default_factory=list)
    """each probe, and the phases it runs in."""
    interval: Duration = Field(default=1.0, gt=0, description="how often probes run during")


class BurnRateAbort(_Strict):
    kind: Literal["burn_rate"]
    """`burn_rate`: stop when an SLO's recent burn rate is too high."""
    slo: str
    """the SLO whose burn rate is watched."""
    above: Number = Field(gt=0)
    """the burn rate (× the sustainable rate) that stops the run."""
    window: Duration = Field(default=5.0, gt=0)
    """the recent window the burn rate is measured over."""
    min_requests: Int = Field(default=20, ge=1)
    """fewer events than this in the window judge nothing."""


class ErrorRatioAbort(_Strict):
    kind: Literal["error_ratio"]
    """`error_ratio`: stop when too many recent requests failed."""
    above: Number = Field(gt=0, le=1)
    """the share of failed requests (0 to 1) that stops the run."""
    window: Duration = Field(default=5.0, gt=0)
    """the recent window the ratio is measured over."""
    min_requests: Int = Field(default=20, ge=1)
    """fewer requests than this in the window judge nothing."""
    overdue: Duration | None = Field(
        default=None,
        gt=0,
        description="a request still unanswered this long counts as failed (default: the "
        "load's timeout), so a total hang trips the abort before the first timeout",
    )


class ProbeAbort(_Strict):
    kind: Literal["probe"]
    """`probe`: stop when a probe fails again and again during the run."""
    probe: str
    """the name of a steady-state probe."""
    failures: Int = Field(default=3, ge=1, description="consecutive failures during the run")


class MetricAbort(_Strict):
    """Stop when a series of the scraped metrics is beyond a bound for ``samples`` scrapes in
    a row (a scrape without a value breaks the row: nothing is judged on no data)."""

    kind: Literal["metric"]
    """`metric`: stop when a scraped series stays beyond a bound."""
    series: str = Field(description="a series of `metrics`")
    above: Number | None = None
    """stop when the series is above this."""
    below: Number | None = None
    """stop when the series is below this."""
    samples: Int = Field(default=3, ge=1, le=1000, description="consecutive samples beyond it")

    @model_validator(mode="after")
    def _a_bound(self) -> MetricAbort:
        if self.above is None and self.below is None:
            raise ValueError("give `above`, `below` or both")
        return self

    def beyond(self, value: float) -> bool:
        return (self.above is not None and value > self.above) or (
            self.below is not None and value < self.below
        )


AbortSpec = Annotated[
    BurnRateAbort | ErrorRatioAbort | ProbeAbort | MetricAbort, Field(discriminator="kind")
]

# -- SLOs and expectations -------------------------------------------------------------------


class SLOFile(_Strict):
    file: Path
    """an SLO file (relative to the scenario file)."""


def _slo_entry(value: Any) -> str:
    # Tags appear in error paths, where the loader drops them: they must not be field names.
    file = isinstance(value, dict | SLOFile) and set(_keys(value)) == {"file"}
    return "slo-file" if file else "slo-document"


def _keys(value: Any) -> list[str]:
    return list(value) if isinstance(value, dict) else ["file"]


SLOEntry = Annotated[
    Annotated[SLOFile, Tag("slo-file")] | Annotated[SLODocument, Tag("slo-document")],
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
    """`slo_met`: an SLO's SLI reached its target over the run."""
    slo: str
    """the SLO judged."""
    met: bool = True
    """`false`: the SLO must be *missed*, for a fault whose harm the SLO has to show (a stall
    that an inter-token SLO must see)."""


class BudgetCeiling(_Expectation):
    kind: Literal["budget"]
    """`budget`: at most this much of the run's error budget spent."""
    slo: str
    """the SLO whose budget is judged."""
    max_consumed: Number = Field(
        ge=0,
        description="the run's budget consumed at most this: bad events / (budget × events) "
        "over the run, 0.5 = 50%",
    )


class Recovery(_Expectation):
    """After the last fault is reverted, requests succeed (2xx, not degraded) again within T."""

    kind: Literal["recovery"]
    """`recovery`: every request good again soon after the last fault."""
    within: Duration = Field(gt=0)
    """the longest time from the last fault's end to lasting good answers."""
    window: Duration = Field(default=2.0, gt=0, description="successes in a row this long")


class FallbackShare(_Expectation):
    kind: Literal["fallback"]
    """`fallback`: the fallback model answered during a fault."""
    during: str = Field(description="the name of a fault with a duration")
    min_share: Number = Field(ge=0, le=1, description="of the requests answered in the window")
    none_after: Duration | None = Field(
        default=None, description="no fallback answer this long after the fault ends"
    )


class CanaryRollback(_Expectation):
    kind: Literal["canary_rollback"]
    """`canary_rollback`: the gateway rolled the canary back in time."""
    within: Duration = Field(gt=0)
    """the longest time to the rollback event."""
    after: str | None = Field(default=None, description="a fault name; default the load start")


class EventExpectation(_Expectation):
    kind: Literal["event"]
    """`event`: the service reported (or did not report) an event."""
    event: str = Field(description="a gateway/supervisor event kind, e.g. worker_restarted")
    present: bool = True
    """`true`: it must happen; `false`: it must not."""
    min_count: Int = Field(default=1, ge=1)
    """how many times at least, when present."""
    details: dict[str, Any] = Field(default_factory=dict, description="fields the event must have")


class StatusShare(_Expectation):
    """At most (or at least) a share of all requests got a status class (``2xx``, ``429``...)."""

    kind: Literal["status"]
    """`status`: the share of requests with a status or class."""
    status: str = Field(pattern=r"^([1-5]xx|[1-5]\d\d|error)$")
    """a status (`503`), a class (`5xx`), or `error` (no answer)."""
    max_share: Number | None = Field(default=None, ge=0, le=1)
    """at most this share of the requests (0 to 1)."""
    min_share: Number | None = Field(default=None, ge=0, le=1)
    """at least this share of the requests (0 to 1)."""
    during: str | None = Field(default=None, description="only in this fault's window")


class AmplificationBound(_Expectation):
    """Retry amplification: attempts sent / requests sent, of a client group or of all
    requests, over the run or the requests scheduled in a fault's window."""

    kind: Literal["amplification"]
    """`amplification`: attempts per request, within bounds."""
    client: str | None = None
    """a client group of `load.clients` (default: every request)."""
    max: Number | None = Field(default=None, ge=1)
    """at most this many attempts per request."""
    min: Number | None = Field(default=None, ge=1)
    """at least this many (a storm the fault must cause)."""
    during: str | None = Field(default=None, description="only requests in this fault's window")

    @model_validator(mode="after")
    def _a_bound(self) -> AmplificationBound:
        if self.max is None and self.min is None:
            raise ValueError("give `max`, `min` or both")
        return self


class Stat(StrEnum):
    MAX = "max"
    MIN = "min"
    MEAN = "mean"
    LAST = "last"


class MetricExpectation(_Expectation, _Bounds):
    """A statistic of a series of the scraped metrics, over the load or a fault's window."""

    kind: Literal["metric"]
    """`metric`: a statistic of a scraped series within bounds."""
    series: str = Field(description="a series of `metrics`")
    stat: Stat = Field(default=Stat.MAX, description="max, min, mean or last of the samples")
    during: str | None = Field(default=None, description="only samples in this fault's window")
    after: str | None = Field(
        default=None, description="only samples from this fault's end to the load's end"
    )

    @model_validator(mode="after")
    def _one_window(self) -> MetricExpectation:
        if self.during is not None and self.after is not None:
            raise ValueError("give `during` or `after`, not both")
        return self


ExpectSpec = Annotated[
    SLOMet
    | BudgetCeiling
    | Recovery
    | FallbackShare
    | CanaryRollback
    | EventExpectation
    | StatusShare
    | MetricExpectation
    | AmplificationBound,
    Field(discriminator="kind"),
]


class Scenario(_Strict):
    name: Name
    """the scenario's name: its run directories and report are named after it."""
    description: str = ""
    """one line on what it tests, shown in the report and the verdict."""
    backend: Backend = Backend.LOCAL
    """where it runs: `local` (the reference stack as processes), `docker` (in containers) or `url`
    (a service already running)."""
    url: str | None = Field(default=None, description="the service, for `backend: url`")
    stack: Path | None = Field(default=None, description="stack file; default the shipped one")
    service: Service = Service()
    """how to talk to the service: its API, model, key, headers and health path."""
    seed: Int = Field(default=0, ge=-(2**63), le=2**63 - 1)
    """seeds the schedule, the prompts and every random choice, so a run repeats."""
    load: Load
    """the traffic sent while the faults happen."""
    steady_state: SteadyState = SteadyState()
    """probes that must hold before, during and after the run."""
    faults: list[FaultSpec] = Field(default_factory=list)
    """the fault timeline, on the load's clock."""
    abort: list[AbortSpec] = Field(default_factory=list)
    """conditions that stop the experiment early (the run is then `aborted`)."""
    slos: list[SLOEntry] = Field(default_factory=list)
    """SLOs judged over the run: files, or documents written inline."""
    metrics: Metrics | None = Field(
        default=None, description="the service's own Prometheus metrics, scraped during the run"
    )
    expect: list[ExpectSpec] = Field(default_factory=list)
    """what must hold for the run to pass; each entry says what it judged."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @model_validator(mode="after")
    def _meaning(self, info: ValidationInfo) -> Scenario:
        # A file is checked by its loader, which reports each problem at its line; a scenario
        # built in code gets the same checks here.
        if (info.context or {}).get("file"):
            return self
        from ._checks import scenario_issues, slo_name_issues

        inline = [e.name for e in self.slos if isinstance(e, SLODocument)]
        issues = [*scenario_issues(self), *slo_name_issues(self, inline)]
        if issues:
            raise ValueError("; ".join(f"{i.field}: {i.message}" for i in issues))
        return self

    def unsupported(self, backend: Backend) -> Issue | None:
        """Why this scenario cannot run on ``backend``, located at the fault (None: it can)."""
        for index, fault in enumerate(self.faults):
            name = self.name_of(fault)
            if (
                isinstance(fault, PartitionFault)
                and fault.method is PartitionMethod.NETWORK
                and backend is not Backend.DOCKER
            ):
                why = "`method: network` needs the docker backend"
                return Issue(("faults", index, "method"), f"fault {name!r}: {why}")
            if isinstance(fault, ContainerFault) and backend is not Backend.DOCKER:
                why = f"`kind: container` needs the docker backend, not {backend.value}"
                return Issue(("faults", index, "kind"), f"fault {name!r}: {why}")
            if backend is not Backend.URL:
                continue
            if not isinstance(fault, ToxicFault | PartitionFault | BurstFault):
                why = "the url backend takes only load and network faults"
                return Issue(("faults", index, "kind"), f"fault {name!r}: {why}")
            if isinstance(fault, ToxicFault | PartitionFault) and fault.hop != "client":
                why = "the url backend has only the `client` hop"
                return Issue(("faults", index, "hop"), f"fault {name!r}: {why}")
        for index, source in enumerate(self.metrics.sources if self.metrics else []):
            if backend is Backend.URL and source.replicas is not None:
                why = "the url backend has no replicas to scrape: give a `path` or `url`"
                return Issue(("metrics", "sources", index, "replicas"), why)
            if backend is Backend.URL and source.service is not None:
                why = "the url backend has no services to scrape: give a `path` or `url`"
                return Issue(("metrics", "sources", index, "service"), why)
        return None

    def unsupported_by(self, backend: Backend) -> str | None:
        """Why this scenario cannot run on ``backend`` (None: it can)."""
        issue = self.unsupported(backend)
        return None if issue is None else issue.message

    def fault_names(self) -> list[str]:
        return [self.name_of(f) for f in self.faults]

    def name_of(self, fault: _Fault) -> str:
        index = next(i for i, f in enumerate(self.faults) if f is fault)
        return fault.name or f"{self.faults[index].kind}-{index}"

    def fault(self, name: str) -> _Fault:
        return self.faults[self.fault_names().index(name)]


def check_url(value: str) -> str:
    """An http(s) URL with a host, e.g. ``http://127.0.0.1:8000``; anything else is refused
    before a request is sent to it."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or value != value.strip():
        raise ValueError(f"{value!r} is not an http(s) URL with a host, e.g. http://127.0.0.1:8000")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from exc
    if any(c.isspace() for c in value):
        raise ValueError(f"{value!r} is not an http(s) URL: it contains white space")
    return value
