"""The HTML report from fixture journals: passed, failed, aborted and incomplete runs, streamed
runs, the index of runs, and ``ichaos report``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos._report import load_run, render_index, render_run
from tests.chaos._journals import make_run


def charts(page: str) -> list[str]:
    return re.findall(r'<svg class="chart" id="([a-z0-9-]+)"', page)


def test_a_passed_run_page_has_verdict_charts_tables_and_nothing_external(tmp_path: Path) -> None:
    page = render_run(make_run(tmp_path, "run-a")).read_text()
    assert '<span class="badge passed">passed</span>' in page
    assert charts(page) == ["throughput", "latency", "budget", "burn"]
    # The fault window is shaded and labelled on every chart; the service's events are marked.
    assert page.count("<title>cut-primary</title>") == 4
    assert page.count("6.10s fallback_on") == 4 and page.count("10.20s fallback_off") == 4
    assert "fallback served ≥ 60%" in page and "0.1% (0.03 of 43.2 min)" in page
    assert "time to detect<b>0.10 s</b>" in page
    # The tiles keep apart what the one classifier keeps apart: of 400 requests, 40 answered
    # by the fallback and 40 failed inside the fault; none shed.
    for tile, count in (("answered by the model asked", 320), ("answered by the fallback", 40),
                        ("shed (429)", 0), ("failed", 40)):  # fmt: skip
        assert f'<div class="tile">{tile}<b>{count}</b></div>' in page
    assert "# &lt;b&gt;" in page  # the scenario text, escaped
    for external in ("<script", "src=", 'href="http', "@import", "url("):
        assert external not in page
    assert "prefers-color-scheme: dark" in page and "@media print" in page


def test_throughput_and_latency_bins_carry_the_recorded_numbers(tmp_path: Path) -> None:
    page = render_run(make_run(tmp_path, "run-a")).read_text()
    # Second 7 (inside the fault): 20 sent, 10 answered by the fallback, 10 failed.
    assert "7–8s: sent 20, succeeded 0, degraded 10, shed 0, failed 10 req/s" in page
    assert "2–3s: sent 20, succeeded 20, degraded 0, shed 0, failed 0 req/s" in page
    assert "7–8s: p50 250, p95 250, p99 250 ms" in page


def test_failed_and_aborted_runs_say_so(tmp_path: Path) -> None:
    failed = render_run(make_run(tmp_path, "f", status="failed")).read_text()
    assert '<span class="badge failed">failed</span>' in failed
    assert '<span class="no">✗</span></td><td>fallback served' in failed
    aborted = render_run(make_run(tmp_path, "a", status="aborted")).read_text()
    assert "<b>Aborted</b> at 11.00 s: error ratio 50.0%" in aborted


def test_a_crashed_run_renders_from_its_journal_marked_incomplete(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "crashed", status="incomplete", torn=True)
    data = load_run(run_dir)
    assert not data.complete and len(data.requests) == 400
    page = render_run(run_dir).read_text()
    assert '<span class="badge incomplete">incomplete</span>' in page
    assert "Incomplete run" in page and "no expectation was judged" in page
    assert charts(page) == ["throughput", "latency", "budget", "burn"]
    # The SLO table is computed from the journal's records: 40 bad of 400.
    assert "40 / 400" in page


def test_streamed_runs_chart_ttft_inter_token_latency_time_per_token_and_tokens_per_s(
    tmp_path: Path,
) -> None:
    page = render_run(make_run(tmp_path, "s", stream=True)).read_text()
    assert charts(page) == [
        "throughput", "latency", "ttft", "itl", "tpot", "output-tps", "budget", "burn"
    ]  # fmt: skip
    # Eight tokens in 250 ms inside the fault, in 50 ms before it.
    assert "7–8s: p50 32, p1 (the slowest answers) 32 tok/s" in page
    assert "2–3s: p50 160, p1 (the slowest answers) 160 tok/s" in page
    # Second 7 is inside the fault: every gap 15 ms; second 2 is before it: 3 ms.
    assert "7–8s: ITL p50 15, ITL p99 15 ms" in page
    assert "2–3s: ITL p50 3, ITL p99 3 ms" in page
    assert "7–8s: TPOT p50 15, TPOT p99 15 ms" in page


def test_a_sixty_second_run_at_fifty_per_second_stays_small(tmp_path: Path) -> None:
    page = render_run(make_run(tmp_path, "big", rate=50, seconds=60, stream=True))
    assert page.stat().st_size < 5 * 1024 * 1024


def test_the_index_lists_runs_newest_first_and_is_replaced_atomically(tmp_path: Path) -> None:
    make_run(tmp_path, "old", status="failed", wall=1_700_000_000.0)
    make_run(tmp_path, "new", wall=1_700_000_500.0)
    make_run(tmp_path, "crashed", status="incomplete", wall=1_700_000_100.0)
    (tmp_path / "not-a-run").mkdir()
    index = render_index(tmp_path).read_text()
    links = re.findall(r'<a href="([^"]+)/index.html">', index)
    assert links == ["new", "crashed", "old"]
    assert "3 runs, newest first." in index
    assert re.findall(r'badge (\w+)">', index) == ["passed", "incomplete", "failed"]
    assert "10000.0%" in index  # the worst budget consumed of the passed run
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["index.html"]


def ichaos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaos", *args], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def test_ichaos_report_renders_a_run_and_the_index(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "run-a")
    done = ichaos("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(run_dir / "index.html")
    assert (tmp_path / "index.html").is_file()
    out = tmp_path / "elsewhere" / "page.html"
    assert ichaos("report", str(run_dir), "-o", str(out)).returncode == 0
    assert "primary-partition" in out.read_text()


def test_ichaos_report_on_something_else_is_a_usage_error(tmp_path: Path) -> None:
    done = ichaos("report", str(tmp_path))
    assert done.returncode == 2
    assert f"error: {tmp_path}: not a run directory (no journal.jsonl)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "status", ["passed", "failed", "aborted", "invalid", "harness_error", "incomplete"]
)
def test_every_kind_of_run_renders(tmp_path: Path, status: str) -> None:
    page = render_run(make_run(tmp_path, status, status=status)).read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert f'<span class="badge {status}">{status}</span>' in page


def test_the_latency_chart_shows_served_answers_only(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "shed")
    # Twenty 2 ms refusals in second 2: shed requests, not answers the service served.
    shed = [
        {"type": "request", "t": 2.0 + i / 20, "wall": 0.0, "index": 1000 + i,
         "scheduled": 2.0 + i / 20, "sent": 2.0 + i / 20, "end": 2.002 + i / 20, "status": 429,
         "error": None, "degraded": False, "latency_s": 0.002, "ttft_s": None}
        for i in range(20)
    ]  # fmt: skip
    with (run_dir / "journal.jsonl").open("a", encoding="utf-8") as journal:
        journal.writelines(json.dumps(e) + "\n" for e in shed)
    page = render_run(run_dir).read_text()
    assert "2–3s: sent 40, succeeded 20, degraded 0, shed 20, failed 0 req/s" in page
    assert "2–3s: p50 50, p95 50, p99 50 ms" in page  # the 2 ms 429s are not in it


def _rewrite_requests(run_dir: Path, change: Any) -> None:
    journal = run_dir / "journal.jsonl"
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "request":
            change(event)
        lines.append(json.dumps(event))
    journal.write_text("\n".join(lines) + "\n")


def test_retries_chart_attempts_against_requests_and_cancelled_requests_are_judged_by_nothing(
    tmp_path: Path,
) -> None:
    run_dir = make_run(tmp_path, "retries", status="incomplete")

    def change(event: dict[str, Any]) -> None:
        at = float(event["scheduled"])
        if 2 <= at < 3:  # every request of second 2 took two attempts, the first one a 503
            event["client"] = "naive"
            event["attempts"] = [{"sent": at, "end": at + 0.01, "status": 503, "error": None}]
            event["last_sent"] = at + 0.02
        if 3 <= at < 4:  # every one of second 3 was cancelled by its client
            event["client"], event["cancelled"] = "impatient", True
            event["status"], event["error"] = 200, None

    _rewrite_requests(run_dir, change)
    page = render_run(run_dir).read_text()
    assert "amplification" in charts(page)
    assert "2–3s: requests 20, attempts 40 /s" in page
    assert "4–5s: requests 20, attempts 20 /s" in page
    # Cancelled: sent, yet in no outcome, and in no SLO's events (380 of the 400).
    assert "3–4s: sent 20, succeeded 0, degraded 0, shed 0, failed 0 req/s" in page
    assert load_run(run_dir).records().__len__() == 380


def test_a_sharded_load_shows_each_shard_and_the_lost_one(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, "sharded", status="invalid")
    journal = run_dir / "journal.jsonl"
    lines = []
    for line in journal.read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "load_finished":
            shard = {"node": "a" * 56, "host": "node-a", "clock_offset_ms": 0.12,
                     "clock_rtt_ms": 0.4, "scheduled": 200, "started": 200, "lag_p99_ms": 1.1,
                     "cpu_share": 0.3, "lost": False, "reasons": []}  # fmt: skip
            lost = {**shard, "node": "b" * 56, "host": "node-b", "started": 61, "lost": True,
                    "reasons": ["did not answer for 10s: lost on node bbbbbbbbbbbb"]}  # fmt: skip
            event["generator"]["shards"] = [{**shard, "shard": 0}, {**lost, "shard": 1}]
            event["generator"]["reasons"] = ["shard 1 (node-b): did not answer for 10s"]
        lines.append(json.dumps(event))
    journal.write_text("\n".join(lines) + "\n")
    page = render_run(run_dir).read_text()
    assert "Sent by 2 shards, arrival k by shard k mod 2" in page
    assert "<td>node-a</td><td>aaaaaaaaaaaa</td>" in page and '"num">+0.12 ms<' in page
    assert "<td>node-b</td>" in page and "<td>lost</td>" in page
    assert "shard 1 (node-b): did not answer for 10s" in page
