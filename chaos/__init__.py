"""ichaos: the chaos and reliability harness around an LLM inference service."""

from importlib.metadata import PackageNotFoundError, version

from ._errors import ApplyError, HarnessError, InjectionError, RevertError, WaitTimeout
from ._injectors import (
    Corruption,
    GpuFault,
    GpuFaultInjector,
    Injector,
    ModelCorruptionInjector,
    PartitionInjector,
    SignalInjector,
    SignalKind,
    ToxicInjector,
    restore_leftovers,
)
from ._loadgen import GeneratorHealth, LoadGenerator, LoadRecord, LoadResult, RequestSpec
from ._shapes import Arrivals, Constant, Ramp, Shape, Spike, Step, expected_count, schedule
from ._toxiproxy import (
    Proxy,
    Stream,
    Toxic,
    ToxicType,
    ToxiproxyClient,
    ToxiproxyError,
    ToxiproxyServer,
    ToxiproxyUnavailable,
)
from ._wait import wait_until

try:
    __version__ = version("inference-chaos")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ApplyError",
    "Arrivals",
    "Constant",
    "Corruption",
    "GeneratorHealth",
    "GpuFault",
    "GpuFaultInjector",
    "HarnessError",
    "InjectionError",
    "Injector",
    "LoadGenerator",
    "LoadRecord",
    "LoadResult",
    "ModelCorruptionInjector",
    "PartitionInjector",
    "Proxy",
    "Ramp",
    "RequestSpec",
    "RevertError",
    "Shape",
    "SignalInjector",
    "SignalKind",
    "Spike",
    "Step",
    "Stream",
    "Toxic",
    "ToxicInjector",
    "ToxicType",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyServer",
    "ToxiproxyUnavailable",
    "WaitTimeout",
    "__version__",
    "expected_count",
    "restore_leftovers",
    "schedule",
    "wait_until",
]
