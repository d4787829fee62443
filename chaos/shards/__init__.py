"""Load sent from several processes or machines: the run's one schedule dealt over shards
(arrival k to shard k mod N), started at one instant, their records merged into one verdict.
Shards run as Ray actors (the ``distributed`` extra); the protocol is engine-neutral.

Public names: :class:`ShardedLoad` (the controller), :class:`RayEngine`, :func:`deal`,
:func:`clock_offset` and the protocol's data (:class:`ShardWork`, :class:`Batch`, ...)."""

from __future__ import annotations

from ._controller import ShardedLoad, ShardEngine
from ._protocol import (
    Batch,
    ClockSample,
    GeneratorSettings,
    ShardHello,
    ShardWork,
    clock_offset,
    deal,
)
from ._ray import NEEDS_RAY, RayEngine, ray_installed
from ._worker import ShardRunner


def sharding_problem(shards: int) -> str | None:
    """Why a load of ``shards`` shards cannot run here (None: it can, or it is one process)."""
    return NEEDS_RAY if shards > 1 and not ray_installed() else None


__all__ = [
    "NEEDS_RAY",
    "Batch",
    "ClockSample",
    "GeneratorSettings",
    "RayEngine",
    "ShardEngine",
    "ShardHello",
    "ShardRunner",
    "ShardWork",
    "ShardedLoad",
    "clock_offset",
    "deal",
    "ray_installed",
    "sharding_problem",
]
