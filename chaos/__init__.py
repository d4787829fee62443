"""ichaos: the chaos and reliability harness around an LLM inference service."""

from importlib.metadata import PackageNotFoundError, version

from ._errors import HarnessError, WaitTimeout
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
    "Arrivals",
    "Constant",
    "GeneratorHealth",
    "HarnessError",
    "LoadGenerator",
    "LoadRecord",
    "LoadResult",
    "Proxy",
    "Ramp",
    "RequestSpec",
    "Shape",
    "Spike",
    "Step",
    "Stream",
    "Toxic",
    "ToxicType",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyServer",
    "ToxiproxyUnavailable",
    "WaitTimeout",
    "__version__",
    "expected_count",
    "schedule",
    "wait_until",
]
