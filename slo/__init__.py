"""SLOs over a run's own request records: SLIs, error budgets, burn rates and multi-window,
multi-burn-rate alerts, exactly and fast. Pure Python: no web or test framework.

    slo = load_slo("slos/chat-availability.yaml")
    result = evaluate(slo, records)          # records: RequestRecord, from the load generator
    result.sli, result.consumed, result.window(300).burn_rate, result.alerts()
"""

from ._alerts import AlertInterval, AlertResult
from ._classify import Verdict
from ._compute import Evaluation, WindowStats, evaluate
from ._duration import Duration, format_duration, parse_duration
from ._errors import EvaluationError, Problem, SLOError, SLOFileError
from ._events import Slice
from ._extrapolate import BreachCost, Extrapolation
from ._issues import Issue
from ._models import (
    DEFAULT_BAD,
    ITLSLI,
    SLI,
    SLO,
    TTFTSLI,
    AvailabilitySLI,
    BudgetingMethod,
    DegradedSLI,
    EmptySlices,
    FailurePolicy,
    GoodputSLI,
    LatencySLI,
    Occurrences,
    Op,
    PeriodKind,
    SLIKind,
    StatusPattern,
    Timeslices,
)
from ._native import NativeDocument as SLODocument
from ._openslo import UNSUPPORTED as OPENSLO_UNSUPPORTED
from ._parse import (
    load_slo,
    load_slos,
    load_yaml_document,
    parse_slo,
    parse_slos,
    parse_yaml_document,
)
from ._reading import read_document_text, read_yaml_documents
from ._records import RecordSet, RequestRecord
from ._rules import DEFAULT_RULES, BurnRateRule, Severity, default_rules

__all__ = [
    "DEFAULT_BAD",
    "DEFAULT_RULES",
    "ITLSLI",
    "OPENSLO_UNSUPPORTED",
    "SLI",
    "SLO",
    "TTFTSLI",
    "AlertInterval",
    "AlertResult",
    "AvailabilitySLI",
    "BreachCost",
    "BudgetingMethod",
    "BurnRateRule",
    "DegradedSLI",
    "Duration",
    "EmptySlices",
    "Evaluation",
    "EvaluationError",
    "Extrapolation",
    "FailurePolicy",
    "GoodputSLI",
    "Issue",
    "LatencySLI",
    "Occurrences",
    "Op",
    "PeriodKind",
    "Problem",
    "RecordSet",
    "RequestRecord",
    "SLIKind",
    "SLODocument",
    "SLOError",
    "SLOFileError",
    "Severity",
    "Slice",
    "StatusPattern",
    "Timeslices",
    "Verdict",
    "WindowStats",
    "default_rules",
    "evaluate",
    "format_duration",
    "load_slo",
    "load_slos",
    "load_yaml_document",
    "parse_duration",
    "parse_slo",
    "parse_slos",
    "parse_yaml_document",
    "read_document_text",
    "read_yaml_documents",
]
