"""Game days, black-box through ``ichaos gameday``: operator answers on stdin, scenario steps
against a loopback service (url backend, the real toxiproxy-server in front), global aborts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos._gameday import load_gameday
from tests.chaos._service import Service

SHIPPED = Path(__file__).resolve().parents[2] / "scenarios" / "gamedays"


@pytest.fixture
def day(tmp_path: Path, served: tuple[str, Service]) -> Iterator[tuple[Path, Service]]:
    url, service = served
    service.failing = False
    (tmp_path / "steady.yaml").write_text(textwrap.dedent("""\
        name: steady
        description: traffic at a loopback service
        load: {rate: 20/s, duration: 3s}
        expect:
          - {kind: status, status: 2xx, min_share: 1.0}
        """))  # fmt: skip
    (tmp_path / "day.yaml").write_text(textwrap.dedent(f"""\
        name: rehearsal
        description: one scenario between two operator steps
        url: {url}
        abort:
          - {{kind: error_ratio, above: 0.5, window: 1s, min_requests: 10}}
        steps:
          - {{kind: operator, name: announce, instructions: Tell the channel., expect: an ack}}
          - {{kind: scenario, file: steady.yaml}}
          - {{kind: operator, name: debrief, instructions: Write down surprises.}}
        """))  # fmt: skip
    yield tmp_path, service
    service.failing = False


def gameday(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ICHAOS_STATE_DIR": str(tmp_path / "state"),
           "ICHAOS_TOXIPROXY_URL": "http://127.0.0.1:9"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "chaos", "gameday", str(tmp_path / "day.yaml"), "--quiet",
         "--report-dir", str(tmp_path / "reports"), *args],
        input=stdin, capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip


def summary(tmp_path: Path) -> dict[str, Any]:
    (page,) = (tmp_path / "reports").glob("*-gameday-rehearsal/gameday.json")
    data: dict[str, Any] = json.loads(page.read_text())
    assert (page.parent / "index.html").is_file()
    return data


def test_a_confirmed_game_day_passes_with_the_operator_s_notes(day: tuple[Path, Service]) -> None:
    tmp_path, _ = day
    done = gameday(tmp_path, stdin="y\nack from alice\nmaybe\nyes\n\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "expect: an ack" in done.stdout and "PASSED" in done.stdout
    steps = summary(tmp_path)["steps"]
    assert [(s["name"], s["status"], s["notes"]) for s in steps] == [
        ("announce", "confirmed", "ack from alice"),
        ("steady", "passed", ""),
        ("debrief", "confirmed", ""),
    ]
    page = next((tmp_path / "reports").glob("*-gameday-rehearsal/index.html")).read_text()
    assert "ack from alice" in page and 'href="../' in page


def test_an_unconfirmed_observation_fails_the_exercise(day: tuple[Path, Service]) -> None:
    tmp_path, _ = day
    done = gameday(tmp_path, stdin="n\nno ack after 5 min\ny\n\n")
    assert done.returncode == 1
    assert summary(tmp_path)["steps"][0]["status"] == "not confirmed"


def test_yes_confirms_every_operator_step_unattended(day: tuple[Path, Service]) -> None:
    tmp_path, _ = day
    assert gameday(tmp_path, "--yes").returncode == 0
    operator = [s for s in summary(tmp_path)["steps"] if s["kind"] == "operator"]
    assert [s["notes"] for s in operator] == ["unattended (--yes)"] * 2


def test_a_global_abort_stops_the_exercise_and_skips_the_rest(day: tuple[Path, Service]) -> None:
    tmp_path, service = day
    service.failing = True
    done = gameday(tmp_path, "--yes")
    assert done.returncode == 1
    assert "game day stopped: step 2 aborted: error ratio" in done.stdout
    statuses = [s["status"] for s in summary(tmp_path)["steps"]]
    assert statuses == ["confirmed", "aborted", "skipped"]


def test_quitting_or_no_operator_stops_the_exercise(day: tuple[Path, Service]) -> None:
    tmp_path, _ = day
    quit_ = gameday(tmp_path, stdin="q\n")
    assert quit_.returncode == 1 and "the operator quit at step 'announce'" in quit_.stdout
    for run in (tmp_path / "reports").iterdir():
        for file in run.iterdir():
            file.unlink()
        run.rmdir()
    closed = gameday(tmp_path, stdin="")
    assert closed.returncode == 1 and "no operator answered" in closed.stdout


def test_bad_game_days_are_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "day.yaml").write_text(textwrap.dedent("""\
        name: broken
        abort:
          - {kind: budget, slo: nosuch, max_consumed: 0.5}
        steps:
          - {kind: scenario, file: missing.yaml}
        """))  # fmt: skip
    done = gameday(tmp_path)
    assert done.returncode == 2 and "no SLO named 'nosuch'" in done.stderr
    (tmp_path / "day.yaml").write_text(
        "name: broken\nsteps:\n  - {kind: scenario, file: missing.yaml}\n"
    )
    done = gameday(tmp_path)
    assert done.returncode == 2 and "day.yaml:3: steps[0].file: invalid scenario:" in done.stderr
    assert "missing.yaml: cannot read: No such file or directory" in done.stderr
    (tmp_path / "day.yaml").write_text("name: broken\nsteps: []\ncolour: red\n")
    done = gameday(tmp_path)
    assert done.returncode == 2 and "day.yaml:3: colour: unknown field" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_a_staging_url_refuses_process_and_worker_faults() -> None:
    with pytest.raises(Exception, match="the url backend takes only load and network faults"):
        load_gameday(SHIPPED / "reference-stack.yaml", url="http://127.0.0.1:9")


def test_the_shipped_game_day_validates() -> None:
    loaded = load_gameday(SHIPPED / "reference-stack.yaml")
    assert len(loaded.gameday.steps) == 7 and len(loaded.scenarios) == 4
    # The global error-ratio abort reaches every scenario step.
    assert all(s.scenario.abort[-1].kind == "error_ratio" for s in loaded.scenarios.values())
