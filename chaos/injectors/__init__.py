"""Fault injectors: one interface, ``apply()`` and ``revert()``, both idempotent; one module per
family of faults (a hop, a process, a GPU hook, a model file, a container)."""

from ._base import Acted, Injector
from .containers import (
    ContainerInjector,
    ContainerRestartInjector,
    ContainerStopInjector,
    DisconnectInjector,
)
from .gpu import GpuFault, GpuFaultInjector
from .group import InjectorGroup
from .model import Corruption, ModelCorruptionInjector, ModelFaultInjector, restore_leftovers
from .network import PartitionInjector, ToxicInjector
from .process import (
    SignalInjector,
    SignalKind,
    process_cmdline,
    process_stat,
    process_state,
    settled_cmdline,
)

__all__ = [
    "Acted",
    "ContainerInjector",
    "ContainerRestartInjector",
    "ContainerStopInjector",
    "Corruption",
    "DisconnectInjector",
    "GpuFault",
    "GpuFaultInjector",
    "Injector",
    "InjectorGroup",
    "ModelCorruptionInjector",
    "ModelFaultInjector",
    "PartitionInjector",
    "SignalInjector",
    "SignalKind",
    "ToxicInjector",
    "process_cmdline",
    "process_stat",
    "process_state",
    "restore_leftovers",
    "settled_cmdline",
]
