"""The verdict of one run: a typed model, produced once by the runner and read by everything
else (progress display, report, pytest plugin, CLI, game day). Nothing re-derives an outcome.

The evidence rule: every expectation states what it judged (so many requests, events or fault
windows). With nothing to judge it is ``no data``, which fails unless its entry says
``allow_no_data: true``. A run's status follows from its parts, worst first:

=================  =========  ======================================================================
status             exit code  when
=================  =========  ======================================================================
``harness_error``  3          a fault did not apply or revert, the target could not be provisioned,
                              the load generator died: the harness cannot vouch for the run
``aborted``        1          an abort rule fired, or SIGINT/SIGTERM stopped the run
``invalid``        1          the load generator, not the target, was the bottleneck (or lost a
                              shard): what it measured is not the target's behaviour
``failed``         1          an expectation or steady-state probe was not met (or had no data)
``passed``         0          every expectation met, with evidence, on a valid run
=================  =========  ======================================================================

Exit code 2 is the CLI's own: invalid input, nothing started.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from slo import Evaluation

from ._errors import ReportError
from ._loadgen import GeneratorHealth


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INVALID = "invalid"
    ABORTED = "aborted"
    HARNESS_ERROR = "harness_error"

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_HARNESS = 0, 1, 2, 3
_EXIT_CODES = {
    Status.PASSED: EXIT_PASSED,
    Status.FAILED: EXIT_FAILED,
    Status.INVALID: EXIT_FAILED,
    Status.ABORTED: EXIT_FAILED,
    Status.HARNESS_ERROR: EXIT_HARNESS,
}


class Judgement(StrEnum):
    """What one expectation found."""

    MET = "met"
    NOT_MET = "not met"
    NO_DATA = "no data"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Evidence(_Model):
    """What an expectation judged: ``count`` of ``unit`` (requests, events, windows)."""

    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count} {self.unit}"


class Outcome(_Model):
    """One expectation, judged."""

    kind: str
    description: str
    judgement: Judgement
    passed: bool
    """MET, or NO_DATA where the scenario allows it for this entry."""
    measured: float | None
    bound: float | None
    evidence: Evidence
    detail: str = ""
    fallback_after: int | None = None
    """``fallback … none_after``: fallback answers after the window (else None)."""


class ProbeResult(_Model):
    probe: str
    ok: bool
    detail: str = ""
    value: float | None = None
    bound: float | None = None


class SteadyState(_Model):
    before_ok: bool = True
    after_ok: bool = True
    results: dict[str, list[ProbeResult]] = {}


class Abort(_Model):
    reason: str
    t: float | None
    rule: str | None = None


class PeriodCost(_Model):
    """What the run costs of a production period's budget, priced by the time it breached
    the SLO: ``breached_minutes`` = error ratio × the run's span; ``consumed`` =
    breached / budget minutes (``budget × period``). No assumed request rate enters it."""

    period_s: float
    budget_minutes: float
    breached_minutes: float
    consumed: float


class SLOResult(_Model):
    """One SLO over the run. ``run_consumed`` is the run's error budget consumed: bad events /
    (budget × events), as if the run were the whole period (None without events); ``consumed``
    is the share of the SLO's own period budget (tiny for a 30-day period and a one-minute run).
    """

    name: str
    sli_kind: str
    budgeting: str
    target: float
    budget: float
    period_s: float
    start: float
    end: float
    elapsed_s: float
    elapsed_share: float
    good: int
    bad: int
    total: int
    excluded: int
    sli: float | None
    error_ratio: float | None
    burn_rate: float | None
    run_consumed: float | None
    consumed: float
    remaining: float
    time_to_exhaustion_s: float | None
    met: bool
    period_cost: PeriodCost | None = None
    """The run priced against 30 days (or the SLO's fixed period)."""

    @classmethod
    def of(cls, ev: Evaluation) -> SLOResult:
        """The figures of ``ev``, with what the run costs of a 30-day budget."""
        cost = ev.breach_cost()
        period_cost = None if cost is None else PeriodCost(
            period_s=cost.period, budget_minutes=cost.budget_minutes,
            breached_minutes=cost.breached_minutes, consumed=cost.consumed,
        )  # fmt: skip
        return cls(**ev.to_dict(), run_consumed=run_consumed(ev), period_cost=period_cost)


def run_consumed(ev: Evaluation) -> float | None:
    """The run's error budget consumed: bad events / (budget × events) over the run, as if the
    run were the SLO's whole period: 1.0 is exactly the budget; None when there were no events.
    (It equals the run's burn rate: the same quantity, read as a share of one budget.)"""
    return ev.burn_rate


class FaultResult(_Model):
    """One planned fault: when its apply() began and when it had applied (None: never), when
    it was reverted, and the service's time to detect it (from the start of apply())."""

    name: str
    kind: str
    at: float
    planned_end: float | None
    apply_started: float | None = None
    time_to_alert_s: float | None = None
    """From the start of apply() to when the scenario's burn-rate rule would first have fired
    (the run replayed every 0.25 s as the live abort check sees it); None without one."""
    applied: float | None
    reverted: float | None
    time_to_detect_s: float | None
    first_failure_s: float | None
    seen: int | None = None
    """Faults that pick answers (`kind: stream`): the answers that went through them."""
    affected: int | None = None
    """… and the ones they acted on (0 is an error: the fault was never tested)."""


class MetricSummary(_Model):
    """One series of the service's scraped metrics over the load: how many scrapes gave it a
    value (``samples``) and how many none (``missing``, with the first reasons why), and its
    statistics over the samples (None without one)."""

    name: str
    metric: str
    read: str
    samples: int
    missing: int
    min: float | None
    mean: float | None
    max: float | None
    last: float | None
    problems: list[str] = []
    chart: bool = True


class ClientCounts(_Model):
    """One client group's requests (logical, as its users saw them) and the attempts they
    took; ``amplification`` is attempts / requests (None without a request sent)."""

    requests: int
    attempts: int
    cancelled: int
    ok: int
    amplification: float | None
    shed: int = 0
    """Attempts the service shed (answered 429), retried or last."""


class RequestCounts(_Model):
    """The load's logical requests by outcome (cancelled ones apart: their clients closed
    them), the attempts they took, and the same per client group."""

    total: int = 0
    ok: int = 0
    degraded: int = 0
    shed: int = 0
    by_status: dict[str, int] = {}
    cancelled: int = 0
    attempts: int = 0
    amplification: float | None = None
    """Retry amplification: attempts / requests sent (1 without retries)."""
    clients: dict[str, ClientCounts] = {}


class Verdict(_Model):
    run_id: str
    scenario: str
    description: str = ""
    file: str
    status: Status
    seed: int
    backend: str
    started_wall: float | None
    duration_s: float
    abort: Abort | None = None
    harness_errors: list[str] = []
    steady_state: SteadyState = SteadyState()
    expectations: list[Outcome] = []
    slos: list[SLOResult] = []
    faults: list[FaultResult] = []
    time_to_detect_s: float | None = None
    time_to_alert_s: float | None = None
    time_to_recover_s: float | None = None
    """Seconds from ``recovered_since`` until every later request is good (for the recovery
    expectation's window, default 2 s, before the load ended); None: never recovered."""
    recovered_since: float | None = None
    """The reference point of time to recover: when the last fault that applied ended."""
    requests: RequestCounts = RequestCounts()
    generator: GeneratorHealth | None = None
    service_events: dict[str, int] = {}
    metrics: list[MetricSummary] = []

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    @property
    def exit_code(self) -> int:
        return self.status.exit_code

    @property
    def valid(self) -> bool:
        return self.generator is None or self.generator.valid

    def to_json(self) -> dict[str, object]:
        """The verdict as written to ``verdict.json`` and the journal (with its exit code)."""
        data: dict[str, object] = self.model_dump(mode="json")
        data["exit_code"] = self.exit_code
        data["passed"] = self.passed
        data["valid"] = self.valid
        return data

    @classmethod
    def from_json(cls, data: object) -> Verdict:
        """A verdict as :meth:`to_json` wrote it; :class:`ReportError` when it is not one
        (a file of another version, or damaged)."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("exit_code", "passed", "valid")}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ReportError(f"not a verdict of this version: {exc.errors()[0]['msg']}") from exc


def read_verdict(path: Path) -> Verdict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot be read: {exc}") from exc
    return Verdict.from_json(data)
