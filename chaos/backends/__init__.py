"""Where a scenario runs: one module per backend, all behind the one :class:`Target` interface.

``local`` (the reference stack as processes), ``docker`` (the same in containers), ``url`` (a
service already running), ``services`` (a stack file's services as processes) and ``compose``
(a stack file's compose file as containers; imported lazily, as ``docker`` is). Every target
holds what it starts in a lease from the moment it exists; :func:`repair` undoes what a killed
run left, as a step of its own before a run starts.
"""

from ._lease import registry_dir, repair, state_dir, toxiproxy_url
from ._stack import StackTarget
from ._target import Replica, ReplicaRef, Target
from .local import LocalTarget
from .services import ServicesTarget
from .url import UrlTarget

__all__ = [
    "LocalTarget",
    "Replica",
    "ReplicaRef",
    "ServicesTarget",
    "StackTarget",
    "Target",
    "UrlTarget",
    "registry_dir",
    "repair",
    "state_dir",
    "toxiproxy_url",
]
