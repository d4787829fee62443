"""What the harness and the reference service agree on over HTTP, defined once: the header
names and the admin paths. No imports, so the harness reads it without the service's extras."""

from __future__ import annotations

ADMIN_TOKEN_HEADER = "X-Admin-Token"
"""Carries the admin token to the gateway's and the workers' admin surface."""
STACK_SECRET_HEADER = "X-Stack-Secret"
"""Carries the stack's secret with the supervisor's events to the gateway."""

ADMIN_STATE_PATH = "/admin/state"
ADMIN_EVENTS_PATH = "/admin/events"
WORKER_FAULTS_PATH = "/admin/faults"
"""A worker's fault hooks: ``{WORKER_FAULTS_PATH}/{kind}`` (POST sets, DELETE clears)."""
WORKER_RELOAD_PATH = "/admin/reload"


def replica_reload_path(pool: str, index: int) -> str:
    """The gateway's path that makes one replica reload its model."""
    return f"/admin/replicas/{pool}/{index}/reload"
