"""The stack file: which models run in which pools, and how the gateway and supervisor behave.

The admin token never appears here: the file names the environment variable that holds it.
"""

from __future__ import annotations

import importlib.resources
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slo import Duration

from . import __name__ as _package
from ._engine import DevicePreference
from ._errors import RegistryError
from ._registry import ModelRef

_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class PoolName(StrEnum):
    PRIMARY = "primary"
    CANARY = "canary"
    FALLBACK = "fallback"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_address(value: str | None) -> str | None:
    if value is None:
        return None
    match = _ADDRESS.match(value)
    if not match or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:21001)")
    return value


Address = Annotated[str | None, Field(description="HOST:PORT the gateway uses for this replica")]


class PoolConfig(_Strict):
    model: str = Field(description="NAME:VERSION from the registry")
    replicas: int = Field(ge=0, le=16)
    addresses: list[Address] = Field(
        default_factory=list,
        description="per replica, the address the gateway must use (e.g. a Toxiproxy listener); "
        "null or absent: the worker's own address",
    )
    max_in_flight: int = Field(default=64, ge=1, le=10_000)

    @field_validator("model")
    @classmethod
    def _model_ref(cls, value: str) -> str:
        try:
            ModelRef.parse(value, require_version=True)
        except RegistryError as exc:  # pydantic reports ValueErrors with the field's path
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str | None]) -> list[str | None]:
        return [_check_address(v) for v in value]

    @model_validator(mode="after")
    def _not_more_addresses_than_replicas(self) -> PoolConfig:
        if len(self.addresses) > self.replicas:
            raise ValueError(
                f"{len(self.addresses)} addresses for {self.replicas} replicas: at most one each"
            )
        return self

    @property
    def ref(self) -> ModelRef:
        return ModelRef.parse(self.model, require_version=True)

    def address(self, index: int) -> str | None:
        return self.addresses[index] if index < len(self.addresses) else None


class CanaryPoolConfig(PoolConfig):
    weight: float = Field(default=5.0, ge=0, le=100, description="percent of traffic")


class Pools(_Strict):
    primary: PoolConfig = PoolConfig(model="primary:v1", replicas=2)
    canary: CanaryPoolConfig = CanaryPoolConfig(model="canary:v2", replicas=1)
    fallback: PoolConfig = PoolConfig(model="fallback:v1", replicas=1)

    @model_validator(mode="after")
    def _need_primary(self) -> Pools:
        if self.primary.replicas < 1:
            raise ValueError("the primary pool needs at least one replica")
        return self

    def items(self) -> list[tuple[PoolName, PoolConfig]]:
        return [(PoolName.PRIMARY, self.primary), (PoolName.CANARY, self.canary),
                (PoolName.FALLBACK, self.fallback)]  # fmt: skip


class BreakerConfig(_Strict):
    failures: int = Field(default=3, ge=1, description="consecutive failures that open it")
    cooldown: Duration = Field(default=2.0, description="open → half-open after this long")


class CanaryControllerConfig(_Strict):
    enabled: bool = True
    window: Duration = 30.0
    min_requests: int = Field(default=10, ge=1)
    burn_rate_threshold: float = Field(
        default=14.4, gt=0, description="roll back when the canary burns its budget this fast"
    )
    availability_target: float = Field(default=0.99, gt=0, lt=1)
    latency_threshold: Duration = 2.0
    latency_target: float = Field(default=0.95, gt=0, lt=1)
    evaluate_every: Duration = 0.5


class GatewayConfig(_Strict):
    deadline: Duration = Field(default=2.0, description="time primary has to answer")
    fallback_deadline: Duration = Field(default=5.0, description="time fallback has to answer")
    retries: int = Field(default=1, ge=0, le=5, description="on a connection failure")
    breaker: BreakerConfig = BreakerConfig()
    health_interval: Duration = 0.5
    health_timeout: Duration = 1.0
    canary: CanaryControllerConfig = CanaryControllerConfig()


class WorkerConfig(_Strict):
    max_batch_size: int = Field(default=16, ge=1, le=256)
    max_wait: Duration = 0.01
    threads: int | None = Field(default=1, ge=1, description="torch threads per worker")
    device: DevicePreference = DevicePreference.AUTO


class RestartConfig(_Strict):
    initial_backoff: Duration = 0.2
    max_backoff: Duration = 10.0
    reset_after: Duration = Field(default=30.0, description="a run this long resets the backoff")


class StackConfig(_Strict):
    pools: Pools = Pools()
    gateway: GatewayConfig = GatewayConfig()
    worker: WorkerConfig = WorkerConfig()
    restart: RestartConfig = RestartConfig()
    registry: Path | None = Field(default=None, description="default: $ICHAOS_REGISTRY")
    fault_hooks: bool = True
    admin_token_env: str = Field(default="ICHAOS_ADMIN_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


DEFAULT_STACK_NAME = "stack.yaml"


def worker_options(config: StackConfig) -> list[str]:
    """The ``worker`` command's options that follow from a stack file (all but the model, the
    registry and the address), for the supervisor's processes and the docker backend's containers
    alike."""
    w = config.worker
    options = [
        "--device", w.device.value, "--max-batch-size", str(w.max_batch_size),
        "--max-wait-ms", str(w.max_wait * 1000), "--admin-token-env", config.admin_token_env,
    ]  # fmt: skip
    if w.threads:
        options += ["--threads", str(w.threads)]
    if config.fault_hooks:
        options.append("--fault-hooks")
    return options


def default_stack_file() -> Path:
    """The stack file shipped with the package."""
    with importlib.resources.as_file(
        importlib.resources.files(_package).joinpath(f"data/{DEFAULT_STACK_NAME}")
    ) as path:
        return Path(path)


def load_stack_config(path: Path) -> StackConfig:
    """Read and validate a stack file; every problem is named by file, line and field."""
    from slo import SLOFileError, load_yaml_document

    from ._errors import ServiceError

    try:
        return load_yaml_document(path, StackConfig)
    except SLOFileError as exc:
        raise ServiceError(f"invalid stack file:\n{exc}") from exc
