"""Exceptions raised by the harness.

HarnessError
├── WaitTimeout          a condition awaited with ``wait_until`` did not hold in time
│   └── ProcessExited    ... because the process it depended on exited first
├── ScenarioError        a scenario file is invalid (raised before anything starts)
├── OptionError          a run setting (a flag, an ini key) has a value it cannot take
├── InjectionError       a fault injector failed
│   ├── ApplyError       ... to apply (nothing of it is left applied)
│   └── RevertError      ... to revert (the run fails with the harness-error exit code)
├── BackendError         the target could not be provisioned or reached
│   ├── EngineUnavailable  no Docker API answers where DOCKER_HOST points
│   └── EngineBroken       the engine answers but cannot run a container
├── ToxiproxyError       the Toxiproxy API refused a request (its status and message kept)
├── ToxiproxyUnavailable the Toxiproxy server cannot be reached or started
├── ScrapeError          a metrics endpoint gave no Prometheus text (its series have no value)
├── ReportError          a directory is not a run directory, or its journal cannot be read
├── ShardError           sharded load could not start: no Ray, no room, a shard that never came
└── Quit                 the operator ended a game day

Outside the tree, on purpose:
Interrupted (a BaseException)  SIGINT or SIGTERM during a run: no ``except Exception`` on the
                               way out can swallow it, and every revert still runs
ScenarioFailed (an Exception)  the pytest plugin's failure of a scenario item: its message is
                               the run's summary, not a harness problem
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every error the harness raises on purpose."""


class WaitTimeout(HarnessError, TimeoutError):
    """A condition did not become true before its deadline."""


class ProcessExited(WaitTimeout):
    """The process a wait depended on exited before the condition held: it never will."""


class InjectionError(HarnessError):
    """A fault injector failed."""


class ApplyError(InjectionError):
    """A fault could not be applied; nothing of it is left applied."""


class RevertError(InjectionError):
    """A fault could not be reverted. Never swallowed: the run that hits it fails."""


class ScenarioError(HarnessError):
    """A scenario file is invalid; the message names file, line and field."""


class BackendError(HarnessError):
    """The target could not be provisioned, reached or torn down."""


class EngineUnavailable(BackendError):
    """No Docker API answers where ``DOCKER_HOST`` (or the default socket) points."""


class EngineBroken(BackendError):
    """The engine answers its API but cannot start a container; the message is the engine's."""


class OptionError(HarnessError, ValueError):
    """A run setting given on a command line or in an ini file has a value it cannot take;
    the message names the setting, the value and what it accepts."""


class ReportError(HarnessError):
    """A directory is not a run directory, or its journal cannot be read."""


class ShardError(HarnessError):
    """Sharded load could not start: Ray is not installed, the cluster cannot be joined or has
    no room for the shards, or a shard did not come up (a shard lost mid-run is not raised:
    it makes the run invalid)."""


class ScrapeError(HarnessError):
    """A metrics endpoint did not answer with Prometheus text; the scrape notes it and the
    series it feeds have no value there (never raised out of a run)."""
