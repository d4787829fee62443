"""The HTML reliability report: one self-contained page per run, and an index of runs.

Everything comes from the run's ``journal.jsonl`` (the verdict too, when the run got that far),
so an old run can be re-rendered and a crashed one still gets a page, marked incomplete. The
page has no script, no font and no file besides itself: charts are inline SVG (``_charts``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from slo import SLO, RequestRecord, SLOError, evaluate

from ._charts import Band, Mark, Series, line_chart
from ._errors import ReportError
from ._expect import RequestOutcome, classify
from ._journal import JOURNAL, PAGE, VERDICT, read_journal
from ._loadgen import AttemptRecord, GeneratorHealth, LoadRecord, judged, nearest_rank
from ._scenario import Judged
from ._verdict import Judgement, SLOResult, Verdict, read_verdict

_MAX_BINS = 300  # a long run gets coarser bins, so a page stays small
_SERVED = (RequestOutcome.OK, RequestOutcome.DEGRADED)
_LABELS = {
    RequestOutcome.OK: "succeeded",
    RequestOutcome.DEGRADED: "degraded",
    RequestOutcome.SHED: "shed",
    RequestOutcome.FAILED: "failed",
}


@dataclass
class RunData:
    run_dir: Path
    started: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_events: list[dict[str, Any]] = field(default_factory=list)
    scrapes: list[dict[str, Any]] = field(default_factory=list)  # the service's metrics
    abort: dict[str, Any] | None = None
    generator: GeneratorHealth | None = None
    verdict: Verdict | None = None
    verdict_problem: str | None = None  # a verdict there, but not one this version reads
    duration: float = 0.0

    @property
    def complete(self) -> bool:
        return self.verdict is not None

    @property
    def status(self) -> str:
        return self.verdict.status.value if self.verdict else "incomplete"

    @property
    def scenario(self) -> str:
        return str(self.started.get("scenario") or self.run_dir.name)

    @property
    def wall(self) -> float | None:
        if self.verdict and self.verdict.started_wall:
            return self.verdict.started_wall
        value = self.started.get("wall")
        return float(value) if value is not None else None

    def slos(self) -> list[SLO]:
        out = []
        for raw in self.started.get("slos", []):
            try:
                out.append(SLO.model_validate(raw))
            except ValueError:
                continue  # a journal from another version: the verdict's numbers still show
        return out

    def records(self) -> list[RequestRecord]:
        """The journaled requests as the run's SLOs judged them (``judged``: its requests or
        their attempts, never a cancelled one)."""
        on = Judged(self.started.get("judge", Judged.REQUESTS.value))
        return [r.to_slo() for r in judged([_load_record(r) for r in self.requests], on)]


def load_run(run_dir: Path) -> RunData:
    journal = run_dir / JOURNAL
    if not journal.is_file():
        raise ReportError(f"{run_dir}: not a run directory (no {JOURNAL})")
    data = RunData(run_dir)
    try:
        events = list(read_journal(run_dir))
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{journal}: cannot read: {exc}") from exc
    for event in events:
        kind = event.get("type")
        if kind == "run_started":
            data.started = event
        elif kind == "target_ready":
            data.target = dict(event.get("target") or {})
        elif kind == "load_started":
            data.duration = float(event.get("duration") or 0.0)
        elif kind == "request":
            data.requests.append(event)
        elif kind == "fault_applied":
            data.faults[str(event["fault"])] = {**event, "applied": event.get("t")}
        elif kind == "fault_reverted" and str(event.get("fault")) in data.faults:
            fault = data.faults[str(event["fault"])]
            if fault.get("planned_end") is not None or fault.get("kind") == "burst":
                fault["reverted"] = event.get("t")
            fault["seen"], fault["affected"] = event.get("seen"), event.get("affected")
        elif kind == "service_event":
            data.service_events.append(dict(event.get("event") or {}))
        elif kind == "metrics" and event.get("t") is not None:
            data.scrapes.append(event)
        elif kind == "abort":
            data.abort = {"reason": event.get("reason"), "t": event.get("t")}
        elif kind == "load_finished" and event.get("generator"):
            with contextlib.suppress(ValueError):  # another version's: the verdict has it too
                data.generator = GeneratorHealth.model_validate(event["generator"])
        elif kind == "verdict":
            _take_verdict(data, functools.partial(Verdict.from_json, event.get("verdict")))
    if data.verdict is None and (run_dir / VERDICT).is_file():
        _take_verdict(data, functools.partial(read_verdict, run_dir / VERDICT))
    for fault in data.faults.values():  # a burst is never reverted: it ends by itself
        at, end, applied = fault.get("planned_at"), fault.get("planned_end"), fault.get("applied")
        if fault.get("kind") == "burst" and at is not None and end is not None and applied:
            fault["reverted"] = float(applied) + float(end) - float(at)
    ends = [float(r["end"]) for r in data.requests if r.get("end") is not None]
    if data.duration <= 0:
        data.duration = max(ends, default=0.0)
    return data


# -- per-bin statistics ----------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    """The load generator's nearest-rank percentile; None (a gap in a chart) when empty."""
    return nearest_rank(values, q) if values else None


def _load_record(r: dict[str, Any]) -> LoadRecord:
    """A journaled request event, back into the record it was written from."""
    gaps = [float(g) for g in r.get("gaps") or []]
    first = r.get("first_token")
    record = LoadRecord(
        int(r.get("index", 0)), float(r["scheduled"]), sent=float(r.get("sent") or r["scheduled"]),
        first_byte=r.get("first_byte"), first_token=first, end=r.get("end"),
        status=r.get("status"), error=r.get("error"), degraded=bool(r.get("degraded")),
        tokens=int(r.get("tokens") or 0), gaps=gaps, client=r.get("client"),
        cancelled=bool(r.get("cancelled")), last_sent=r.get("last_sent"),
        attempts=[AttemptRecord(float(a["sent"]), float(a["end"]), a.get("status"),
                                a.get("error")) for a in r.get("attempts") or []],
    )  # fmt: skip
    record.last_token = None if first is None else float(first) + sum(gaps)
    return record


def _bins(data: RunData) -> tuple[float, int]:
    span = max(data.duration, 1.0)
    resolution = 1.0 if span <= _MAX_BINS else math.ceil(span / _MAX_BINS)
    return resolution, math.ceil(span / resolution)


@dataclass(frozen=True)
class _Logged:
    """A journaled request, as the one request classifier reads it."""

    scheduled: float
    status: int | None
    error: str | None
    degraded: bool


def _outcome(r: dict[str, Any]) -> RequestOutcome:
    status = r.get("status")
    return classify(_Logged(float(r["scheduled"]), None if status is None else int(status),
                            r.get("error"), bool(r.get("degraded"))))  # fmt: skip


def _take_verdict(data: RunData, read: Callable[[], Verdict]) -> None:
    try:
        data.verdict, data.verdict_problem = read(), None
    except ReportError as exc:
        data.verdict_problem = str(exc)


def _by_bin(data: RunData, resolution: float, count: int) -> list[list[dict[str, Any]]]:
    bins: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for r in data.requests:
        i = int(float(r["scheduled"]) // resolution)
        if 0 <= i < count:
            bins[i].append(r)
    return bins


# -- the page --------------------------------------------------------------------------------

CSS = """
:root { --fg:#1d2330; --muted:#5c6577; --bg:#ffffff; --panel:#f4f6fa; --grid:#dde2ea;
  --ok:#1a7f37; --bad:#c62828; --warn:#9a6700; --band:rgba(214,69,65,.12);
  --c0:#2563eb; --c1:#16a34a; --c2:#d97706; --c3:#dc2626; --c4:#7c3aed; --c5:#0891b2; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e6e9ef; --muted:#9aa3b2; --bg:#11151c; --panel:#1a202b; --grid:#2b3340;
    --ok:#4ade80; --bad:#f87171; --warn:#fbbf24; --band:rgba(248,113,113,.16);
    --c0:#60a5fa; --c1:#4ade80; --c2:#fbbf24; --c3:#f87171; --c4:#a78bfa; --c5:#22d3ee; } }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1000px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 2px 10px; border-radius: 10px; font-weight: 600;
  color: #fff; text-transform: uppercase; font-size: 12px; }
.passed { background: var(--ok); }
.failed, .aborted, .error, .harness_error { background: var(--bad); }
.incomplete, .invalid { background: var(--warn); }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.tile { background: var(--panel); border-radius: 8px; padding: 8px 14px; min-width: 150px; }
.tile b { display: block; font-size: 18px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--grid);
  vertical-align: top; } th { color: var(--muted); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.yes { color: var(--ok); font-weight: 700; } .no { color: var(--bad); font-weight: 700; }
pre { background: var(--panel); padding: 12px; border-radius: 8px; overflow-x: auto; }
figure { margin: 10px 0 18px; } figcaption { font-size: 12px; color: var(--muted); }
.chart { width: 100%; height: auto; display: block; }
.chart text { fill: var(--muted); font-size: 11px; } .chart .title { fill: var(--fg);
  font-size: 13px; font-weight: 600; }
.chart .grid { stroke: var(--grid); stroke-width: 1; } .chart .axis { stroke: var(--muted); }
.chart .band rect { fill: var(--band); } .chart .band text { fill: var(--bad); font-size: 10px; }
.chart .line { fill: none; stroke-width: 1.8; stroke-linejoin: round; }
.chart .mark line { stroke: var(--muted); stroke-dasharray: 2 3; stroke-width: 1; }
.chart .mark circle { fill: var(--muted); }
.chart .mark.bad line, .chart .mark.bad circle { stroke: var(--bad); fill: var(--bad); }
.chart .mark.good line, .chart .mark.good circle { stroke: var(--ok); fill: var(--ok); }
.chart .hover { fill: transparent; } .chart .hover:hover { fill: rgba(127,127,127,.12); }
.s0 { stroke: var(--c0); } .s1 { stroke: var(--c1); } .s2 { stroke: var(--c2); }
.s3 { stroke: var(--c3); } .s4 { stroke: var(--c4); } .s5 { stroke: var(--c5); }
.key { margin-right: 14px; white-space: nowrap; }
.key i { display: inline-block; width: 16px; height: 0; border-top: 3px solid; margin-right: 5px;
  vertical-align: middle; } .key i.dashed { border-top-style: dashed; }
.key i.s0 { border-color: var(--c0); } .key i.s1 { border-color: var(--c1); }
.key i.s2 { border-color: var(--c2); } .key i.s3 { border-color: var(--c3); }
.key i.s4 { border-color: var(--c4); } .key i.s5 { border-color: var(--c5); }
.note { border-left: 4px solid var(--warn); padding: 6px 12px; background: var(--panel); }
@media print { body { max-width: none; padding: 0; } .chart .hover { display: none; }
  figure, table { break-inside: avoid; } pre { white-space: pre-wrap; } }
"""

_BAD_EVENTS = {
    "replica_down", "breaker_open", "fallback_on", "canary_rollback", "worker_exited",
    "model_load_refused",
}  # fmt: skip
_GOOD_EVENTS = {"replica_up", "breaker_closed", "fallback_off", "worker_restarted"}


def _num(value: Any, fmt: str = "{:.3g}", none: str = "—") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return none
    return fmt.format(value)


def _seconds(value: Any) -> str:
    return _num(value, "{:.2f} s")


def _pct(value: Any) -> str:
    return _num(value, "{:.1%}")


def _when(wall: float | None) -> str:
    if wall is None:
        return "—"
    return dt.datetime.fromtimestamp(wall).strftime("%Y-%m-%d %H:%M:%S")


def _event_label(event: dict[str, Any]) -> str:
    details = {k: v for k, v in event.items() if k not in {"seq", "kind", "wall", "monotonic", "t"}}
    text = ", ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, dict))
    return f"{event.get('kind')} {text}".strip()


def _bands(data: RunData) -> list[Band]:
    bands = []
    for name, fault in data.faults.items():
        start = fault.get("applied")
        if start is None:
            continue
        end = fault.get("reverted")
        bands.append(Band(float(start), float(end) if end is not None else float(start), name))
    return bands


def _marks(data: RunData) -> list[Mark]:
    marks = []
    for event in data.service_events:
        t = event.get("t")
        if t is None or float(t) < 0:
            continue
        kind = str(event.get("kind"))
        family = "bad" if kind in _BAD_EVENTS else "good" if kind in _GOOD_EVENTS else "other"
        marks.append(Mark(float(t), _event_label(event), family))
    return marks


def _charts(data: RunData) -> str:
    resolution, count = _bins(data)
    bins = _by_bin(data, resolution, count)
    common: dict[str, Any] = {
        "resolution": resolution, "x_max": count * resolution, "bands": _bands(data),
        "marks": _marks(data),
    }  # fmt: skip
    per_s = 1 / resolution
    outcomes = list(RequestOutcome)
    # A cancelled request is its client's doing: in "sent", in no outcome.
    counts = {o: [sum(1 for r in b if not r.get("cancelled") and _outcome(r) is o) * per_s
                  for b in bins] for o in outcomes}  # fmt: skip
    sent = Series("sent", [len(b) * per_s for b in bins], "s0", dashed=True)
    throughput = [sent] + [
        Series(_LABELS[o], counts[o], css)
        for o, css in zip(outcomes, ["s1", "s2", "s4", "s3"], strict=True)
    ]
    out = [line_chart(title="Throughput", unit="req/s", series=throughput, ident="throughput",
                      **common)]  # fmt: skip
    out += _amplification_chart(data, resolution, count, common)
    # Served answers only: a 2 ms 429 is not a latency of the service's answers.
    latency = []
    for q, css in ((50, "s0"), (95, "s2"), (99, "s3")):
        values = []
        for b in bins:
            lat = [float(r["latency_s"]) * 1000 for r in b if r.get("latency_s") is not None
                   and _outcome(r) in _SERVED]  # fmt: skip
            values.append(_percentile(lat, q))
        latency.append(Series(f"p{q}", values, css))
    out.append(line_chart(title="Latency of served answers (from the scheduled send)", unit="ms",
                          series=latency, ident="latency", **common))  # fmt: skip
    out += _stream_charts(data, bins, common)
    records = data.records()
    remaining, burn = [], []
    for i, slo in enumerate(data.slos()):
        try:
            ev = evaluate(slo, records, start=0.0, end=count * resolution)
            points = ev.series(resolution)
        except SLOError:
            continue
        total = sum(p.total for p in points)
        spent, left = 0, []
        for p in points:
            spent += p.bad
            left.append(1 - spent / (slo.budget * total) if total else None)
        css = f"s{i % 6}"
        remaining.append(Series(slo.name, [None if v is None else v * 100 for v in left], css))
        burn.append(Series(slo.name, [p.burn_rate for p in points], css))
    if remaining:
        out.append(line_chart(title="Error budget remaining (share of the run's)", unit="%",
                              series=remaining, ident="budget", **common))  # fmt: skip
        out.append(line_chart(title=f"Burn rate per {resolution:g} s", unit="×", series=burn,
                              ident="burn", **common))  # fmt: skip
    out += _metric_charts(data, resolution, count, common)
    return "\n".join(out)


def _amplification_chart(
    data: RunData, resolution: float, count: int, common: dict[str, Any]
) -> list[str]:
    """Where clients retry: requests sent per second (each once, when it was scheduled) and
    attempts sent per second (each when it left), so that a retry storm shows as the gap
    between them."""
    if not any(r.get("attempts") or r.get("client") for r in data.requests):
        return []
    requests, attempts = [0.0] * count, [0.0] * count
    per_s = 1 / resolution

    def add(column: list[float], at: float) -> None:
        i = int(at // resolution)
        if 0 <= i < count:
            column[i] += per_s

    for r in data.requests:
        if r.get("error") == "dropped":
            continue
        add(requests, float(r["scheduled"]))
        sends = [float(a["sent"]) for a in r.get("attempts") or []]
        last = r.get("last_sent") if r.get("attempts") else r.get("sent")
        for at in [*sends, float(last if last is not None else r["scheduled"])]:
            add(attempts, at)
    series = [Series("requests", requests, "s0", dashed=True), Series("attempts", attempts, "s3")]
    title = "Retry amplification: attempts and requests sent"
    return [line_chart(title=title, unit="/s", series=series, ident="amplification", **common)]


def _stream_charts(
    data: RunData, bins: list[list[dict[str, Any]]], common: dict[str, Any]
) -> list[str]:
    """Time to first token, inter-token latency and time per output token where the load
    streamed; each answer's output tokens per second wherever answers counted tokens."""
    out: list[str] = []
    if any(r.get("ttft_s") is not None for r in data.requests):
        ttft = []
        for q, css in ((50, "s0"), (99, "s3")):
            values = [
                _percentile(
                    [float(r["ttft_s"]) * 1000 for r in b if r.get("ttft_s") is not None], q
                )
                for b in bins
            ]
            ttft.append(Series(f"TTFT p{q}", values, css))
        out.append(line_chart(title="Time to first token", unit="ms", series=ttft, ident="ttft",
                              **common))  # fmt: skip
    if any(r.get("gaps") for r in data.requests):
        # Inter-token latency: every gap between two streamed tokens, of the requests scheduled
        # in the bin; time per output token: each request's mean gap (see LoadRecord.tpot_s).
        itl, tpot = [], []
        for q, css in ((50, "s0"), (99, "s3")):
            gaps = [_percentile([float(g) * 1000 for r in b for g in r.get("gaps") or []], q)
                    for b in bins]  # fmt: skip
            itl.append(Series(f"ITL p{q}", gaps, css))
            per_request = [
                _percentile([float(r["tpot_s"]) * 1000 for r in b if r.get("tpot_s") is not None],
                            q)
                for b in bins
            ]  # fmt: skip
            tpot.append(Series(f"TPOT p{q}", per_request, css))
        out.append(line_chart(title="Inter-token latency", unit="ms", series=itl, ident="itl",
                              **common))  # fmt: skip
        out.append(line_chart(title="Time per output token", unit="ms", series=tpot,
                              ident="tpot", **common))  # fmt: skip
    if any(r.get("output_tps") is not None for r in data.requests):
        # Each answered request's tokens / its latency (LoadRecord.output_tps), by bin.
        tps = []
        for q, css, label in ((50, "s0", "p50"), (1, "s3", "p1 (the slowest answers)")):
            values = [_percentile([float(r["output_tps"]) for r in b
                                   if r.get("output_tps") is not None], q)
                      for b in bins]  # fmt: skip
            tps.append(Series(label, values, css))
        out.append(line_chart(title="Output tokens per second of each answer", unit="tok/s",
                              series=tps, ident="output-tps", **common))  # fmt: skip
    return out


def _charted(data: RunData) -> list[tuple[str, str]]:
    """The scraped series the report draws, with what each reads (name, description)."""
    if data.verdict is not None:
        return [(m.name, f"{m.metric} ({m.read})") for m in data.verdict.metrics if m.chart]
    names: dict[str, None] = {}
    for scrape in data.scrapes:  # an incomplete run: every series it scraped
        names.update(dict.fromkeys(scrape.get("values") or {}))
    return [(n, "") for n in names]


def _metric_charts(
    data: RunData, resolution: float, count: int, common: dict[str, Any]
) -> list[str]:
    """One chart per scraped series: the mean of its samples in each bin (a gap: none)."""
    out = []
    for i, (name, what) in enumerate(_charted(data)):
        bins: list[list[float]] = [[] for _ in range(count)]
        for scrape in data.scrapes:
            value = (scrape.get("values") or {}).get(name)
            index = int(float(scrape["t"]) // resolution)
            if value is not None and 0 <= index < count:
                bins[index].append(float(value))
        values = [sum(b) / len(b) if b else None for b in bins]
        title = f"{name}: {what}" if what else name
        out.append(line_chart(title=f"Service metric {title}", unit="", ident=f"metric-{i}",
                              series=[Series(name, values, f"s{i % 6}")], **common))  # fmt: skip
    return out


def _metrics_table(data: RunData) -> str:
    summaries = data.verdict.metrics if data.verdict else []
    if not summaries:
        return ""
    rows = [
        [escape(m.name), escape(m.metric), escape(m.read), str(m.samples), str(m.missing),
         _num(m.min), _num(m.mean), _num(m.max), _num(m.last), escape("; ".join(m.problems))]
        for m in summaries
    ]  # fmt: skip
    table = _table(
        ["series", "metric", "read", "samples", "missing", "min", "mean", "max", "last",
         "why missing"],
        rows, {3, 4, 5, 6, 7, 8},
    )  # fmt: skip
    return f"<h2>Service metrics</h2>{table}"


def _table(head: list[str], rows: Iterable[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _yes(ok: bool) -> str:
    return '<span class="yes">✓</span>' if ok else '<span class="no">✗</span>'


def _mark(judgement: Judgement, passed: bool) -> str:
    if judgement is Judgement.NO_DATA:
        allowed = " (allowed)" if passed else ""
        return f'<span class="{"yes" if passed else "no"}">no data{allowed}</span>'
    return _yes(passed)


def _expectations(data: RunData) -> str:
    if not data.verdict:
        problem = f" ({escape(data.verdict_problem)})" if data.verdict_problem else ""
        return (
            f'<p class="note">The run ended without a verdict{problem}: no expectation '
            "was judged.</p>"
        )
    rows = [
        [_mark(e.judgement, e.passed), escape(e.description), _num(e.measured, "{:.4g}"),
         _num(e.bound, "{:.4g}"), escape(str(e.evidence)), escape(e.detail)]
        for e in data.verdict.expectations
    ]  # fmt: skip
    steady = data.verdict.steady_state
    rows.append([_yes(steady.before_ok), "steady state before the run", "", "", "", ""])
    rows.append([_yes(steady.after_ok), "steady state after the run", "", "", "", ""])
    return _table(["", "expectation", "measured", "bound", "judged", "detail"], rows, {2, 3})


def _slo_results(data: RunData) -> list[SLOResult]:
    if data.verdict:
        return list(data.verdict.slos)
    # An incomplete run: the SLOs evaluated from what its journal holds, without pricing.
    records, out = data.records(), []
    for slo in data.slos():
        try:
            ev = evaluate(slo, records, start=0.0, end=data.duration or None)
        except SLOError:
            continue
        out.append(SLOResult.of(ev))
    return out


def _slo_table(data: RunData) -> str:
    slos = _slo_results(data)
    if not slos:
        return '<p class="muted">No SLO in this scenario.</p>'
    rows = []
    for s in slos:
        pc = s.period_cost
        cost = (
            f"{_pct(pc.consumed)} ({_num(pc.breached_minutes, '{:.2f}')} of "
            f"{_num(pc.budget_minutes, '{:.1f}')} min)"
            if pc is not None
            else "—"
        )
        verdict = _yes(s.met) if s.total else '<span class="no">no data</span>'
        rows.append([
            escape(s.name), escape(f"{s.sli_kind}, {s.budgeting}"), _num(s.target, "{:.4g}"),
            _num(s.sli, "{:.4g}"), f"{s.bad} / {s.total}", _pct(s.run_consumed),
            _num(s.burn_rate, "{:.2f}×"), cost, verdict,
        ])  # fmt: skip
    return _table(
        ["SLO", "SLI", "target", "measured", "bad / total", "run budget consumed", "burn rate",
         "cost of a 30-day budget", "met"],
        rows, {2, 3, 4, 5, 6},
    )  # fmt: skip


def _faults_table(data: RunData) -> str:
    described = {n: f.get("description", "") for n, f in data.faults.items()}
    if data.verdict and data.verdict.faults:
        rows = [
            [escape(f.name), escape(f.kind), escape(str(described.get(f.name, ""))),
             _seconds(f.at), _seconds(f.applied), _seconds(f.reverted),
             _seconds(f.time_to_detect_s), _seconds(f.time_to_alert_s),
             _seconds(f.first_failure_s), _acted(f.affected, f.seen)]
            for f in data.verdict.faults
        ]  # fmt: skip
    else:
        rows = [
            [escape(n), escape(str(f.get("kind"))), escape(str(described.get(n, ""))),
             _seconds(f.get("planned_at")), _seconds(f.get("applied")),
             _seconds(f.get("reverted")), "—", "—", "—",
             _acted(f.get("affected"), f.get("seen"))]
            for n, f in data.faults.items()
        ]  # fmt: skip
    if not rows:
        return '<p class="muted">No fault in this scenario.</p>'
    return _table(
        ["fault", "kind", "what", "planned", "applied", "reverted", "detected after",
         "alert after", "first failure after", "acted on"],
        rows, {3, 4, 5, 6, 7, 8},
    )  # fmt: skip


def _acted(affected: object, seen: object) -> str:
    """A fault that picks answers: how many it acted on, of those that went through it."""
    if isinstance(affected, int) and isinstance(seen, int):
        return f"{affected} of {seen} answers"
    return "—"


def _events_table(data: RunData) -> str:
    events = [e for e in data.service_events if e.get("t") is not None and float(e["t"]) >= 0]
    if not events:
        return '<p class="muted">The service reported no event during the run.</p>'
    rows = [[_seconds(e["t"]), escape(_event_label(e))] for e in events]
    return _table(["t", "event"], rows, {0})


def _generator(data: RunData) -> str:
    g = data.generator or (data.verdict.generator if data.verdict else None)
    if g is None:
        return '<p class="muted">The load generator did not report (the run ended early).</p>'
    warning = ""
    if g.reasons:
        warning = (
            '<p class="note"><b>Invalid run</b>: the load generator\'s measurement cannot be '
            "trusted: " + escape("; ".join(g.reasons)) + "</p>"
        )
    rows = [[
        str(g.scheduled), str(g.started), str(g.late), str(g.dropped),
        _num(g.lag_p50_ms, "{:.2f} ms"), _num(g.lag_p99_ms, "{:.2f} ms"),
        _num(g.lag_max_ms, "{:.1f} ms"), _pct(g.cpu_share),
    ]]  # fmt: skip
    table = _table(
        ["scheduled", "sent", "late", "dropped", "lag p50", "lag p99", "lag max", "CPU of a core"],
        rows, set(range(8)),
    )  # fmt: skip
    if not g.shards:
        return warning + table
    shards = [[
        str(s.shard), escape(s.host), escape(s.node[:12]), _num(s.clock_offset_ms, "{:+.2f} ms"),
        _num(s.clock_rtt_ms, "{:.2f} ms"), str(s.scheduled), str(s.started),
        _num(s.lag_p99_ms, "{:.2f} ms"), _pct(s.cpu_share),
        "lost" if s.lost else ("; ".join(escape(r) for r in s.reasons) or "ok"),
    ] for s in g.shards]  # fmt: skip
    return warning + table + (
        f"<p>Sent by {len(g.shards)} shards, arrival k by shard k mod {len(g.shards)}; each "
        "shard's clock offset to the controller's was measured over the round trip shown.</p>"
    ) + _table(
        ["shard", "host", "node", "clock offset", "round trip", "dealt", "sent", "lag p99",
         "CPU of a core", "health"], shards, {0, 3, 4, 5, 6, 7, 8},
    )  # fmt: skip


def _environment(data: RunData) -> str:
    env = dict(data.started.get("environment") or {})
    rows = [
        ["seed", escape(str(data.started.get("seed", "—")))],
        ["backend", escape(str(data.started.get("backend", "—")))],
        ["scenario file", escape(str(data.started.get("file", "—")))],
        ["started", escape(_when(data.wall))],
        *[[escape(k), escape(str(v))] for k, v in env.items()],
    ]
    if data.target:
        shown = {k: v for k, v in data.target.items() if k != "hops"}
        rows += [[escape(k), escape(str(v))] for k, v in shown.items()]
    return _table(["", ""], rows)


def render_page(data: RunData) -> str:
    v = data.verdict
    outcomes = [_outcome(r) for r in data.requests]
    worst = max((s.run_consumed for s in _slo_results(data) if s.run_consumed is not None),
                default=None)  # fmt: skip
    tiles = [
        ("requests", f"{len(data.requests)}"),
        ("answered by the model asked", f"{outcomes.count(RequestOutcome.OK)}"),
        ("answered by the fallback", f"{outcomes.count(RequestOutcome.DEGRADED)}"),
        ("shed (429)", f"{outcomes.count(RequestOutcome.SHED)}"),
        ("failed", f"{outcomes.count(RequestOutcome.FAILED)}"),
        ("time to detect", _seconds(v.time_to_detect_s if v else None)),
        ("time to alert", _seconds(v.time_to_alert_s if v else None)),
        ("time to recover", _seconds(v.time_to_recover_s if v else None)),
        ("worst run budget consumed", _pct(worst)),
    ]
    notes = []
    if not data.complete:
        notes.append(
            '<p class="note"><b>Incomplete run</b>: the journal ends without a verdict (the '
            "harness was killed or crashed). Everything below is what it recorded until then.</p>"
        )
    if data.abort:
        notes.append(f'<p class="note"><b>Aborted</b> at {_seconds(data.abort.get("t"))}: '
                     f"{escape(str(data.abort.get('reason')))}</p>")  # fmt: skip
    for error in v.harness_errors if v else []:
        notes.append(f'<p class="note"><b>Harness error</b>: {escape(error)}</p>')
    title = f"{data.scenario} — {data.status}"
    description = escape(v.description if v else "")
    badge = f'<span class="badge {escape(data.status)}">{escape(data.status)}</span>'
    version = escape(str(data.started.get("environment", {}).get("ichaos", "")))
    tile_html = "".join(f'<div class="tile">{escape(k)}<b>{val}</b></div>' for k, val in tiles)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(data.scenario)} {badge}</h1>
<p class="muted">{description}<br>run {escape(data.run_dir.name)} · {escape(_when(data.wall))}
· seed {escape(str(data.started.get("seed", "—")))}</p>
{"".join(notes)}
<div class="tiles">{tile_html}</div>
<h2>Expectations</h2>{_expectations(data)}
<h2>Timeline</h2>
<p class="muted">Fault windows are shaded; the service's events are marked (hover for details).</p>
{_charts(data)}
<h2>SLOs</h2>{_slo_table(data)}
<h2>Faults</h2>{_faults_table(data)}
<h2>Service events</h2>{_events_table(data)}
{_metrics_table(data)}
<h2>Load generator</h2>{_generator(data)}
<h2>Scenario</h2><pre>{escape(str(data.started.get("text", "")))}</pre>
<h2>Environment</h2>{_environment(data)}
<p class="muted">ichaos report · {version}</p>
</body></html>
"""


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # atomic: a reader sees the old page or the new one, never half


def render_run(run_dir: Path, out: Path | None = None) -> Path:
    """Render ``run_dir``'s page (default ``run_dir/index.html``); returns its path."""
    page = render_page(load_run(run_dir))
    target = out or run_dir / PAGE
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, page)
    return target


def _headline(run_dir: Path) -> RunData:
    """What the index shows of a run: its verdict file and the journal's first line, not the
    whole journal (every request of every run) each time a run ends. A run without a verdict
    file (a crashed one, or copied without it) is read in full."""
    try:
        verdict = read_verdict(run_dir / VERDICT)
        with (run_dir / JOURNAL).open(encoding="utf-8") as fh:
            started = json.loads(fh.readline())
    except (OSError, ValueError, ReportError):
        return load_run(run_dir)
    if started.get("type") != "run_started":
        return load_run(run_dir)
    return RunData(run_dir, started=started, verdict=verdict)


def render_index(report_dir: Path) -> Path:
    """``report_dir/index.html``: every run below it, newest first."""
    runs = []
    for journal in report_dir.glob(f"*/{JOURNAL}"):
        try:
            runs.append(_headline(journal.parent))
        except ReportError:
            continue
    runs.sort(key=lambda r: (r.wall or 0.0, r.run_dir.name), reverse=True)
    rows = []
    for run in runs:
        v = run.verdict
        consumed = max(
            (s.run_consumed for s in (v.slos if v else []) if s.run_consumed is not None),
            default=None,
        )
        link = f'<a href="{escape(run.run_dir.name)}/{PAGE}">{escape(run.run_dir.name)}</a>'
        rows.append([
            escape(run.scenario), escape(_when(run.wall)),
            f'<span class="badge {escape(run.status)}">{escape(run.status)}</span>',
            _pct(consumed), _seconds(v.time_to_recover_s if v else None), link,
        ])  # fmt: skip
    table = (
        _table(
            ["scenario", "date", "verdict", "run budget consumed", "time to recover", "run"],
            rows,
            {3, 4},
        )
        if rows
        else '<p class="muted">No run yet.</p>'
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>ichaos runs</title><style>{CSS}</style></head>
<body><h1>ichaos runs</h1><p class="muted">{len(runs)} runs, newest first.</p>{table}</body></html>
"""
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / PAGE
    atomic_write(path, page)
    return path
