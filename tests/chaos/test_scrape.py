"""Scraping a service's Prometheus metrics: real HTTP on loopback, prometheus_client's own
exposition on one side and its parsers on the other, and the series a scenario reads."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from chaos._scenario import Metrics
from chaos._scrape import Endpoint, ScrapeError, Scraper, parse, summarise


@dataclass
class Exposed:
    """What the loopback server answers: set by the test between scrapes."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; version=0.0.4"
    trickle_s: float = 0.0  # a pause before each line of the body
    lines_sent: int = 0
    answered: threading.Event = field(default_factory=threading.Event)  # a handler ended
    asked: list[dict[str, str]] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        exposed: Exposed = self.server.exposed
        exposed.asked.append(dict(self.headers))
        self.send_response(exposed.status)
        self.send_header("Content-Type", exposed.content_type)
        self.send_header("Content-Length", str(len(exposed.body)))
        self.end_headers()
        try:
            for line in exposed.body.splitlines(keepends=True):
                if exposed.trickle_s:
                    time.sleep(exposed.trickle_s)
                self.wfile.write(line)
                self.wfile.flush()
                exposed.lines_sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up
        finally:
            exposed.answered.set()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def exposed() -> Iterator[tuple[str, Exposed]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.exposed = Exposed()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics", server.exposed  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scraper(url: str, *series: dict[str, Any], clock: Clock | None = None, **more: Any) -> Scraper:
    metrics = Metrics.model_validate({"series": list(series), **more})
    endpoints = [Endpoint("service", url)]
    return Scraper(metrics, lambda: endpoints, clock=clock or Clock())


def registry() -> tuple[CollectorRegistry, Gauge, Counter, Histogram]:
    r = CollectorRegistry()
    queue = Gauge("model_queue_depth", "waiting", ["pool"], registry=r)
    requests = Counter("model_requests", "requests", ["status"], registry=r)
    batch = Histogram("model_batch_size", "batch", buckets=(1, 2, 4, 8), registry=r)
    return r, queue, requests, batch


def test_the_parsers_read_text_and_openmetrics_with_colons_in_names() -> None:
    text = (
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="m"} 3\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
    )
    samples = parse(text)
    assert [(s.name, dict(s.labels), s.value) for s in samples] == [
        ("vllm:num_requests_waiting", {"model_name": "m"}, 3.0),
        ("vllm:kv_cache_usage_perc", {"model_name": "m"}, 0.25),
    ]
    r, queue, _, _ = registry()
    queue.labels(pool="primary").set(5)
    om = parse(openmetrics_latest(r).decode(), "application/openmetrics-text; version=1.0.0")
    assert [(s.name, s.value) for s in om if s.family == "model_queue_depth"] == [
        ("model_queue_depth", 5.0)
    ]
    assert ("model_batch_size_count", 0.0) in [(s.name, s.value) for s in om]
    with pytest.raises(ScrapeError, match="not Prometheus text"):
        parse("model_queue_depth{pool= 3 4 5\n")
    with pytest.raises(ScrapeError, match="not OpenMetrics"):
        parse(text, "application/openmetrics-text")  # no `# EOF`


def test_values_combine_over_matching_labels(exposed: tuple[str, Exposed]) -> None:
    url, server = exposed
    r, queue, _, _ = registry()
    queue.labels(pool="primary").set(3)
    queue.labels(pool="canary").set(5)
    server.body = generate_latest(r)
    s = scraper(
        url,
        {"name": "all", "metric": "model_queue_depth"},
        {"name": "deepest", "metric": "model_queue_depth", "aggregate": "max"},
        {"name": "primary", "metric": "model_queue_depth", "labels": {"pool": "primary"}},
        {"name": "absent", "metric": "model_queue_depth", "labels": {"pool": "fallback"}},
        {"name": "unknown", "metric": "no_such_metric"},
    )
    got = s.scrape(1.0)
    s.close()
    assert got.t == 1.0
    assert got.values == {"all": 8.0, "deepest": 5.0, "primary": 3.0, "absent": None,
                          "unknown": None}  # fmt: skip
    assert got.problems["absent"] == 'no sample model_queue_depth{pool="fallback"} exposed'
    assert got.problems["unknown"] == "no sample no_such_metric exposed"
    assert set(got.problems) == {"absent", "unknown"}
    assert "text/plain" in server.asked[0]["Accept"]


def test_rates_divide_the_increase_by_the_time_between_scrapes_and_survive_resets(
    exposed: tuple[str, Exposed],
) -> None:
    url, server = exposed
    clock = Clock()
    r, _, requests, _ = registry()
    # Two series read one counter: each keeps its own previous scrape.
    s = scraper(url, {"name": "rps", "metric": "model_requests", "read": "rate"},
                {"name": "total", "metric": "model_requests_total"},
                {"name": "errors", "metric": "model_requests", "labels": {"status": "503"},
                 "read": "rate"}, clock=clock)  # fmt: skip
    requests.labels(status="200").inc(10)
    requests.labels(status="503").inc(2)
    server.body = generate_latest(r)
    first = s.scrape(0.0)
    assert first.values == {"rps": None, "total": 12.0, "errors": None}
    assert first.problems["rps"] == "a rate needs two scrapes"
    requests.labels(status="200").inc(20)
    requests.labels(status="503").inc(4)
    server.body = generate_latest(r)
    clock.now += 2.0
    assert s.scrape(2.0).values == {"rps": pytest.approx(12.0), "total": 36.0,
                                    "errors": pytest.approx(2.0)}  # fmt: skip
    # The service restarted: its counters start again from zero (here: 6 and 0).
    r2, _, again, _ = registry()
    again.labels(status="200").inc(6)
    again.labels(status="503")
    server.body = generate_latest(r2)
    clock.now += 3.0
    assert s.scrape(5.0).values["rps"] == pytest.approx(2.0)
    s.close()


def test_a_histogram_mean_pools_the_observations_between_scrapes(
    exposed: tuple[str, Exposed],
) -> None:
    url, server = exposed
    clock = Clock()
    r, _, _, batch = registry()
    s = scraper(url, {"name": "batch", "metric": "model_batch_size", "read": "mean"}, clock=clock)
    batch.observe(1)
    server.body = generate_latest(r)
    assert s.scrape(0.0).problems["batch"] == "a mean needs two scrapes"
    for size in (2, 4, 6):
        batch.observe(size)
    server.body = generate_latest(r)
    clock.now += 1
    assert s.scrape(1.0).values["batch"] == pytest.approx(4.0)
    clock.now += 1
    idle = s.scrape(2.0)
    assert idle.values["batch"] is None
    assert idle.problems["batch"] == "nothing observed since the previous scrape"
    s.close()


@pytest.mark.parametrize(
    ("status", "body", "content_type", "why"),
    [
        (503, b"down", "text/plain", "HTTP 503"),
        (200, b"\xff\xfe", "text/plain", "not UTF-8 at byte 0"),
        (200, b"<html>hello</html>", "text/html", "not Prometheus text"),
    ],
)
def test_an_endpoint_that_gives_no_metrics_says_why(
    exposed: tuple[str, Exposed], status: int, body: bytes, content_type: str, why: str
) -> None:
    url, server = exposed
    server.status, server.body, server.content_type = status, body, content_type
    s = scraper(url, {"name": "q", "metric": "model_queue_depth"})
    got = s.scrape(0.0)
    s.close()
    assert got.values == {"q": None}
    assert got.problems["q"].startswith(f"1 of 1 endpoints did not answer ({url}: {why}")


def test_a_series_keeps_what_answered_and_notes_what_did_not(exposed: tuple[str, Exposed]) -> None:
    url, server = exposed
    r, queue, _, _ = registry()
    queue.labels(pool="primary").set(4)
    server.body = generate_latest(r)
    metrics = Metrics.model_validate({"series": [{"name": "q", "metric": "model_queue_depth"}]})
    gone = "http://127.0.0.1:1/metrics"  # nothing listens on port 1
    endpoints = [Endpoint("service", url), Endpoint("service", gone)]
    s = Scraper(metrics, lambda: endpoints)
    got = s.scrape(0.0)
    s.close()
    assert got.values == {"q": 4.0}
    assert got.problems["q"].startswith(f"1 of 2 endpoints did not answer ({gone}: ConnectError")


def test_a_body_over_the_limit_is_refused(
    exposed: tuple[str, Exposed], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, server = exposed
    monkeypatch.setattr("chaos._scrape.MAX_BYTES", 1024)
    server.body = b"# padding\n" * 200
    s = scraper(url, {"name": "q", "metric": "model_queue_depth"})
    why = s.scrape(0.0).problems["q"]
    s.close()
    assert "more than 1024 bytes" in why


def test_a_summary_counts_samples_and_keeps_the_first_reasons(
    exposed: tuple[str, Exposed],
) -> None:
    url, server = exposed
    r, queue, _, _ = registry()
    s = scraper(url, {"name": "q", "metric": "model_queue_depth", "labels": {"pool": "p"}})
    scrapes = []
    for t, value in enumerate([2.0, None, 6.0, 4.0]):
        if value is None:
            server.status = 500
        else:
            server.status = 200
            queue.labels(pool="p").set(value)
        server.body = generate_latest(r)
        scrapes.append(s.scrape(float(t)))
    s.close()
    summary = summarise(s.metrics.series[0], scrapes)
    assert (summary.samples, summary.missing) == (3, 1)
    assert (summary.min, summary.mean, summary.max, summary.last) == (2.0, 4.0, 6.0, 4.0)
    assert len(summary.problems) == 1 and "HTTP 500" in summary.problems[0]


def test_a_server_trickling_its_answer_is_cut_at_the_timeout(exposed: tuple[str, Exposed]) -> None:
    url, server = exposed
    server.body = b"".join(b"# comment %d\n" % i for i in range(40))
    server.trickle_s = 0.1  # each read comes in time; the whole would take 4 s
    s = scraper(url, {"name": "q", "metric": "model_queue_depth"}, timeout=0.5)
    why = s.scrape(0.0).problems["q"]
    s.close()  # hangs up on the server, which stops at its next line
    assert "not whole within 0.5s" in why
    assert server.answered.wait(10)
    assert server.lines_sent < 40  # the scrape did not wait for the whole answer
