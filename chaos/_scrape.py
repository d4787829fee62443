"""The service's own Prometheus metrics, scraped while a run goes.

A scrape fetches every source of the scenario's ``metrics`` at once (each bounded in time and
size), parses the text with prometheus_client's parsers (the classic text format, or OpenMetrics
when the server answers in it) and reads each series from the samples that carry its name and
labels, over every endpoint of its source (every replica of a pool, say):

- ``value``: the samples' values, combined by the series' aggregate (sum unless it says
  otherwise);
- ``rate``: each sample's increase since the previous scrape of the same endpoint, per second of
  the time between the two scrapes (a counter that went down was reset: its increase is its new
  value, as Prometheus counts it); combined by the aggregate;
- ``mean``: a histogram's or summary's mean observation since the previous scrape, pooled over
  every matching sample: Σ Δ``_sum`` / Σ Δ``_count``; none when nothing was observed.

A series with no matching sample (an endpoint down, a name that is not exposed, the first scrape
of a rate) has no value in that scrape, and the scrape says why: nothing is judged on it.
"""

from __future__ import annotations

import concurrent.futures
import math
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families

from ._errors import HarnessError, ScrapeError
from ._expect import statistic
from ._scenario import Aggregate, Metrics, MetricSeries, Reading, Service, Stat
from ._verdict import MetricSummary
from .backends import StackTarget, Target

MAX_BYTES = 16 * 1024 * 1024
_ACCEPT = "text/plain;version=0.0.4;q=1, application/openmetrics-text;version=1.0.0;q=0.5"


@dataclass(frozen=True)
class Endpoint:
    """One URL of a source, with what asking it needs."""

    source: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True


@dataclass(frozen=True)
class _Sample:
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    family: str
    type: str


@dataclass(frozen=True)
class Scrape:
    """One scrape: each series' value at ``t`` (run time; None before the load) or None, and
    why where it has none or where part of its sources did not answer."""

    t: float | None
    values: dict[str, float | None]
    problems: dict[str, str]


def parse(text: str, content_type: str = "") -> list[_Sample]:
    """Every sample of a scrape, parsed by prometheus_client; ScrapeError if it is not
    Prometheus text (or OpenMetrics, when ``content_type`` says so)."""
    openmetrics = content_type.partition(";")[0].strip() == "application/openmetrics-text"
    try:
        families = list((openmetrics_families if openmetrics else text_families)(text))
    except Exception as exc:  # the parsers raise ValueError, IndexError, KeyError… on bad text
        kind = "OpenMetrics" if openmetrics else "Prometheus text"
        raise ScrapeError(f"not {kind}: {exc or type(exc).__name__}") from exc
    return [
        _Sample(s.name, tuple(sorted(s.labels.items())), float(s.value), f.name, f.type)
        for f in families
        for s in f.samples
    ]


def _part(series: MetricSeries, sample: _Sample) -> str | None:
    """Which part of ``series`` the sample is: ``value``, ``sum`` or ``count`` (None: none)."""
    metric = series.metric
    if series.read is Reading.MEAN:
        return {f"{metric}_sum": "sum", f"{metric}_count": "count"}.get(sample.name)
    if sample.name == metric:
        return "value"
    # A counter is named by its family (`requests`) or its sample (`requests_total`).
    if sample.type == "counter" and sample.family == metric and sample.name == f"{metric}_total":
        return "value"
    return None


def _matches(series: MetricSeries, sample: _Sample) -> bool:
    labels = dict(sample.labels)
    return all(labels.get(k) == v for k, v in series.labels.items())


def combine(values: Sequence[float], how: Aggregate) -> float:
    if how is Aggregate.SUM:
        return math.fsum(values)
    if how is Aggregate.MAX:
        return max(values)
    if how is Aggregate.MIN:
        return min(values)
    return math.fsum(values) / len(values)


def _increase(now: float, before: float) -> float:
    return now - before if now >= before else now  # a reset counts from zero


class Scraper:
    """Scrapes ``metrics`` from the endpoints ``endpoints()`` names at each call (replicas
    may have moved since the last one) and keeps what rates and means need of the last."""

    def __init__(
        self,
        metrics: Metrics,
        endpoints: Callable[[], list[Endpoint]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self._endpoints = endpoints
        self._clients: dict[int, httpx.Client] = {}
        # Per series, endpoint and sample: two series may read one counter.
        self._previous: dict[
            tuple[str, str, str, tuple[tuple[str, str], ...]], tuple[float, float]
        ] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8)
        self._lock = threading.Lock()  # endpoints are fetched in parallel
        self._names = [s.name for s in metrics.series]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, verify: ssl.SSLContext | bool) -> httpx.Client:
        key = id(verify) if isinstance(verify, ssl.SSLContext) else int(verify)
        with self._lock:
            if key not in self._clients:
                self._clients[key] = httpx.Client(verify=verify, timeout=self.metrics.timeout)
            return self._clients[key]

    def _fetch(self, endpoint: Endpoint) -> list[_Sample]:
        client = self._client(endpoint.verify)
        headers = {**endpoint.headers, "Accept": _ACCEPT}
        # httpx's timeout bounds each read; a server trickling bytes is bounded here as a whole.
        deadline = time.monotonic() + self.metrics.timeout
        try:
            with client.stream("GET", endpoint.url, headers=headers) as answer:
                if not answer.is_success:
                    raise ScrapeError(f"HTTP {answer.status_code}")
                body = bytearray()
                for chunk in answer.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise ScrapeError(f"more than {MAX_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise ScrapeError(f"not whole within {self.metrics.timeout:g}s")
                content_type = answer.headers.get("content-type", "")
        except httpx.HTTPError as exc:
            raise ScrapeError(f"{type(exc).__name__}: {exc}") from exc
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScrapeError(f"not UTF-8 at byte {exc.start}") from exc
        return parse(text, content_type)

    def scrape(self, t: float | None) -> Scrape:
        """Every series now, labelled with run time ``t``; rates divide by the time between
        this scrape and the previous one, on the monotonic clock."""
        now = self._clock()
        try:
            endpoints = self._endpoints()
        except (HarnessError, OSError, ValueError, KeyError) as exc:
            why = f"the endpoints could not be listed: {exc}"
            return Scrape(t, dict.fromkeys(self._names, None), dict.fromkeys(self._names, why))
        futures = [self._pool.submit(self._fetch, e) for e in endpoints]
        answers: list[tuple[Endpoint, list[_Sample] | str]] = []
        for endpoint, future in zip(endpoints, futures, strict=True):
            try:
                answers.append((endpoint, future.result()))
            except ScrapeError as exc:
                answers.append((endpoint, f"{endpoint.url}: {exc}"))
        values: dict[str, float | None] = {}
        problems: dict[str, str] = {}
        for series in self.metrics.series:
            value, problem = self._read(series, now, answers)
            values[series.name] = value
            if problem:
                problems[series.name] = problem
        return Scrape(t, values, problems)

    def _read(
        self, series: MetricSeries, t: float, answers: list[tuple[Endpoint, list[_Sample] | str]]
    ) -> tuple[float | None, str]:
        mine = [(e, a) for e, a in answers if series.source in (None, e.source)]
        failed = [a for _, a in mine if isinstance(a, str)]
        readings: list[float] = []
        pooled = [0.0, 0.0]  # Σ Δsum, Σ Δcount
        first_scrape = False
        matched = False
        for endpoint, samples in mine:
            if isinstance(samples, str):
                continue
            for sample in samples:
                part = _part(series, sample)
                if part is None or not _matches(series, sample) or not math.isfinite(sample.value):
                    continue
                matched = True
                if series.read is Reading.VALUE:
                    readings.append(sample.value)
                    continue
                key = (series.name, endpoint.url, sample.name, sample.labels)
                before = self._previous.get(key)
                self._previous[key] = (t, sample.value)
                if before is None or t <= before[0]:
                    first_scrape = True
                    continue
                increase = _increase(sample.value, before[1])
                if series.read is Reading.RATE:
                    readings.append(increase / (t - before[0]))
                else:
                    pooled[1 if part == "count" else 0] += increase
        value: float | None = None
        if series.read is Reading.MEAN:
            value = pooled[0] / pooled[1] if pooled[1] > 0 else None
        elif readings:
            value = combine(readings, series.combine)
        notes = []
        if failed:
            notes.append(f"{len(failed)} of {len(mine)} endpoints did not answer ({failed[0]})")
        if value is None:
            if not mine:
                notes.append("no endpoint to scrape")
            elif not matched and len(failed) < len(mine):
                notes.append(f"no sample {_wanted(series)} exposed")
            elif first_scrape and not readings and pooled[1] == 0:
                notes.append(f"a {series.read.value} needs two scrapes")
            elif series.read is Reading.MEAN and matched:
                notes.append("nothing observed since the previous scrape")
        return value, "; ".join(notes)


def endpoints_of(
    metrics: Metrics, target: Target, service: Service
) -> Callable[[], list[Endpoint]]:
    """The endpoints of every source, looked up at each scrape: a source's ``path`` on the
    service's own address (asked like the service: its headers, key and certificates), on
    each replica of a pool, or its absolute ``url`` (asked with nothing of the service's)."""
    headers, verify = service.request_headers(), service.ssl_context() or True

    def endpoints() -> list[Endpoint]:
        found = []
        for source in metrics.sources:
            if source.url is not None:
                found.append(Endpoint(source.name, source.url))
            elif source.service is not None:
                if not isinstance(target, StackTarget):
                    continue  # refused before the run; a target built in code has none
                declared = target.stack.stack.services[source.service].metrics
                path = source.path if "path" in source.model_fields_set else declared
                found.append(Endpoint(source.name, f"{target.service_url(source.service)}{path}"))
            elif source.replicas is not None:
                found += [
                    Endpoint(source.name, f"{r.url.rstrip('/')}{source.path}")
                    for r in target.replicas()
                    if r.ref.pool == source.replicas.value
                ]
            else:
                found.append(Endpoint(source.name, f"{target.direct_url}{source.path}",
                                      headers, verify))  # fmt: skip
        return found

    return endpoints


def _wanted(series: MetricSeries) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in series.labels.items())
    name = f"{series.metric}_sum/_count" if series.read is Reading.MEAN else series.metric
    return f"{name}{{{labels}}}" if labels else name


def scrape_event(scrape: Scrape) -> dict[str, Any]:
    """A scrape as the journal holds it."""
    return {"values": dict(scrape.values), "problems": dict(scrape.problems)}


def summarise(series: MetricSeries, scrapes: Sequence[Scrape]) -> MetricSummary:
    """A series over the load's scrapes, with the first distinct reasons it had no value."""
    values = [v for s in scrapes if (v := s.values.get(series.name)) is not None]
    problems: list[str] = []
    for one in scrapes:
        why = one.problems.get(series.name)
        if why and why not in problems and len(problems) < 5:
            problems.append(why)
    return MetricSummary(
        name=series.name, metric=series.metric, read=series.read.value, samples=len(values),
        missing=len(scrapes) - len(values), min=statistic(values, Stat.MIN),
        mean=statistic(values, Stat.MEAN), max=statistic(values, Stat.MAX),
        last=statistic(values, Stat.LAST), problems=problems, chart=series.chart,
    )  # fmt: skip
