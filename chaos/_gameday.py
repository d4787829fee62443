"""Game days: an ordered rehearsal of scenarios and operator steps, with global abort conditions
and one report for the whole exercise.

A game day file names its steps — ``scenario`` (a scenario file, run as ``ichaos run`` would)
and ``operator`` (instructions, the observation to expect, and a confirmation prompt answered
with notes) — plus abort conditions that hold across the exercise: ``error_ratio`` and
``burn_rate`` rules are added to every scenario step (so a run stops and reverts the moment one
holds), and ``budget`` caps what the exercise as a whole may spend of an SLO's budget. Any abort
stops the exercise; the remaining steps are skipped. With ``url`` (a staging deployment), every
scenario runs on the url backend, where only load and client-hop network faults are allowed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slo import SLO, Issue, RequestRecord, SLOFileError, evaluate, load_yaml_document

from ._errors import HarnessError, ScenarioError
from ._events import Observer
from ._loading import LoadedScenario, load_scenario, read_slo_entries
from ._recording import recorders
from ._report import CSS, atomic_write, load_run
from ._runner import Runner, RunResult, RunSettings
from ._scenario import (
    Backend,
    BurnRateAbort,
    ErrorRatioAbort,
    Name,
    Number,
    SLOEntry,
    check_url,
)
from ._verdict import EXIT_FAILED, EXIT_HARNESS, EXIT_PASSED, Status, run_consumed


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioStep(_Strict):
    kind: Literal["scenario"]
    file: Path = Field(description="a scenario file, relative to the game day file")
    name: str | None = None


class OperatorStep(_Strict):
    kind: Literal["operator"]
    name: str
    instructions: str = Field(description="what the operator does")
    expect: str = Field(default="", description="what they should observe")
    confirm: bool = Field(default=True, description="ask for a yes/no and notes")


Step = Annotated[ScenarioStep | OperatorStep, Field(discriminator="kind")]


class BudgetAbort(_Strict):
    """The exercise may spend at most this share of an SLO's budget, over all its requests:
    bad events / (budget × events), as a scenario's ``budget`` expectation judges a run."""

    kind: Literal["budget"]
    slo: str
    max_consumed: Number = Field(gt=0)


GlobalAbort = Annotated[BurnRateAbort | ErrorRatioAbort | BudgetAbort, Field(discriminator="kind")]


class GameDay(_Strict):
    name: Name
    description: str = ""
    url: str | None = Field(default=None, description="a staging service: load/network faults")
    steps: list[Step] = Field(min_length=1)
    abort: list[GlobalAbort] = Field(default_factory=list)
    slos: list[SLOEntry] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)


@dataclass(frozen=True)
class LoadedGameDay:
    gameday: GameDay
    path: Path
    scenarios: dict[int, LoadedScenario]  # step index -> its scenario, with the global aborts
    slos: list[SLO]


def load_gameday(path: str | Path, *, url: str | None = None) -> LoadedGameDay:
    """Validate a game day and every scenario it names (with the global aborts merged in), so a
    mistake anywhere is reported before the first step starts."""
    source = Path(path)
    base = source.resolve().parent
    slos: list[SLO] = []
    scenarios: dict[int, LoadedScenario] = {}

    def check(gameday: GameDay) -> list[Issue]:
        found, issues = read_slo_entries(gameday.slos, base)
        slos.extend(found)
        names = [s.name for s in found]
        files_read = not issues  # else a missing name may just be in the file that failed
        for index, rule in enumerate(gameday.abort):
            if isinstance(rule, BurnRateAbort | BudgetAbort) and rule.slo not in names:
                message = f"no SLO named {rule.slo!r} in the game day's slos {names}"
                issues.extend([Issue(("abort", index, "slo"), message)] if files_read else [])
        target_url = url or gameday.url
        live_rules = [r for r in gameday.abort if not isinstance(r, BudgetAbort)]
        for index, step in enumerate(gameday.steps):
            if not isinstance(step, ScenarioStep):
                continue
            file = step.file if step.file.is_absolute() else base / step.file
            where = ("steps", index, "file")
            try:
                loaded = load_scenario(file)
            except ScenarioError as exc:
                issues.append(Issue(where, str(exc).replace("\n", "\n  ")))
                continue
            scenario = loaded.scenario
            if target_url is not None and (problem := scenario.unsupported_by(Backend.URL)):
                issues.append(Issue(where, f"on {target_url}: {problem}"))
                continue
            known = {s.name for s in loaded.slos}
            extra = [s for s in found if s.name not in known]
            scenario = scenario.model_copy(update={"abort": [*scenario.abort, *live_rules]})
            scenarios[index] = dataclasses.replace(
                loaded, scenario=scenario, slos=[*loaded.slos, *extra]
            )
        return issues

    try:
        gameday = load_yaml_document(source, GameDay, check=check)
    except SLOFileError as exc:
        raise ScenarioError(f"invalid game day:\n{exc}") from exc
    return LoadedGameDay(gameday, source, scenarios, slos)


@dataclass
class StepOutcome:
    index: int
    kind: str
    name: str
    # a run's Status (passed, failed, invalid, aborted, harness_error), or an operator step's:
    # confirmed | not confirmed | done | skipped
    status: str
    detail: str = ""
    notes: str = ""
    run: RunResult | None = None


@dataclass
class GameDayResult:
    gameday: GameDay
    report_dir: Path
    steps: list[StepOutcome] = field(default_factory=list)
    abort: str | None = None

    @property
    def exit_code(self) -> int:
        if any(s.status == Status.HARNESS_ERROR for s in self.steps):
            return EXIT_HARNESS
        ok = {"passed", "confirmed", "done"}
        if self.abort or any(s.status not in ok for s in self.steps):
            return EXIT_FAILED
        return EXIT_PASSED


class Quit(HarnessError):
    """The operator ended the exercise."""


Ask = Callable[[str], str]


def _confirm(step: OperatorStep, ask: Ask, say: Callable[[str], None], yes: bool) -> StepOutcome:
    say(f"\n── operator step: {step.name}")
    for line in step.instructions.strip().splitlines():
        say(f"   {line}")
    if step.expect:
        say(f"   expect: {step.expect}")
    if not step.confirm:
        return StepOutcome(0, "operator", step.name, "done")
    if yes:
        say("   confirmed (--yes)")
        return StepOutcome(0, "operator", step.name, "confirmed", notes="unattended (--yes)")
    while True:
        answer = ask("   observed as expected? [y]es / [n]o / [q]uit: ").strip().lower()
        if answer in {"y", "yes", "n", "no", "q", "quit"}:
            break
    if answer.startswith("q"):
        raise Quit(f"the operator quit at step {step.name!r}")
    notes = ask("   notes (Enter for none): ").strip()
    status = "confirmed" if answer.startswith("y") else "not confirmed"
    return StepOutcome(0, "operator", step.name, status, notes=notes)


def run_gameday(
    loaded: LoadedGameDay,
    settings: RunSettings,
    *,
    yes: bool = False,
    ask: Ask = input,
    say: Callable[[str], None] = print,
    observers: Callable[[], list[Observer]] = list,
) -> GameDayResult:
    gameday = loaded.gameday
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    report_dir = settings.report_dir / f"{stamp}-gameday-{gameday.name}"
    report_dir.mkdir(parents=True, exist_ok=False)
    result = GameDayResult(gameday, report_dir)
    url = settings.url or gameday.url
    run_settings = dataclasses.replace(settings, backend=Backend.URL if url else settings.backend,
                                       url=url)  # fmt: skip
    records: list[RequestRecord] = []
    say(f"game day {gameday.name}: {len(gameday.steps)} steps" + (f" against {url}" if url else ""))
    for index, step in enumerate(gameday.steps):
        if result.abort is not None:
            name = step.name or (step.file.name if isinstance(step, ScenarioStep) else "")
            result.steps.append(StepOutcome(index, step.kind, str(name), "skipped"))
            continue
        if isinstance(step, OperatorStep):
            try:
                outcome = _confirm(step, ask, say, yes)
            except (Quit, EOFError) as exc:
                reason = str(exc) if isinstance(exc, Quit) else "no operator answered (EOF)"
                result.abort = reason
                result.steps.append(StepOutcome(index, "operator", step.name, "aborted", reason))
                continue
            outcome.index = index
            result.steps.append(outcome)
            continue
        scenario = loaded.scenarios[index]
        say(f"\n── scenario step: {scenario.scenario.name} ({step.file})")
        run = Runner(scenario, run_settings, observers=[*recorders(), *observers()]).run()
        status = run.verdict.status.value
        detail = run.verdict.abort.reason if run.verdict.abort else ""
        result.steps.append(StepOutcome(index, "scenario", step.name or scenario.scenario.name,
                                        status, detail, run=run))  # fmt: skip
        say(f"   {status.upper()} → {run.report or run.run_dir}")
        # Runs are back to back: their records go end to end on one time axis.
        start = max((r.timestamp for r in records), default=-1.0) + 1.0
        records.extend(dataclasses.replace(r, timestamp=r.timestamp + start) for r in _records(run))
        if status == Status.ABORTED:
            result.abort = f"step {index + 1} aborted: {detail}"
        elif status == Status.HARNESS_ERROR:
            result.abort = f"step {index + 1}: harness error"
        else:
            result.abort = _budget_exceeded(gameday, loaded.slos, records)
    if result.abort:
        say(f"\n■ game day stopped: {result.abort}")
    page = render_gameday(result)
    say(f"\ngame day report: {page}")
    return result


def _records(run: RunResult) -> list[RequestRecord]:
    return load_run(run.run_dir).records()


def _budget_exceeded(gameday: GameDay, slos: list[SLO], records: list[RequestRecord]) -> str | None:
    by_name = {s.name: s for s in slos}
    for rule in gameday.abort:
        if isinstance(rule, BudgetAbort) and records:
            consumed = run_consumed(evaluate(by_name[rule.slo], records))
            if consumed is not None and consumed > rule.max_consumed:
                return (
                    f"{rule.slo}: the exercise has consumed {consumed:.0%} of its budget "
                    f"> {rule.max_consumed:.0%}"
                )
    return None


def render_gameday(result: GameDayResult) -> Path:
    """The exercise's page: every step with its outcome, notes and run report; and a JSON twin."""
    g = result.gameday
    rows = []
    for s in result.steps:
        link = ""
        if s.run is not None and s.run.report is not None:
            rel = Path("..") / s.run.run_dir.name / s.run.report.name
            link = f'<a href="{escape(str(rel))}">report</a>'
        rows.append(
            f"<tr><td>{s.index + 1}</td><td>{escape(s.kind)}</td><td>{escape(s.name)}</td>"
            f'<td><span class="badge {escape(s.status.replace(" ", "-"))}">{escape(s.status)}'
            f"</span></td><td>{escape(s.detail)}</td><td>{escape(s.notes)}</td><td>{link}</td></tr>"
        )
    status = "passed" if result.exit_code == EXIT_PASSED else "failed"
    abort = f'<p class="note"><b>Stopped</b>: {escape(result.abort)}</p>' if result.abort else ""
    steps_text = "".join(
        f"<li><b>{escape(st.name)}</b>: {escape(st.instructions)}"
        + (f"<br><i>expect:</i> {escape(st.expect)}" if st.expect else "")
        + "</li>"
        for st in g.steps
        if isinstance(st, OperatorStep)
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>game day {escape(g.name)} — {status}</title><style>{CSS}
.confirmed, .done {{ background: var(--ok); }}
.not-confirmed, .skipped {{ background: var(--warn); }}
</style></head><body>
<h1>game day {escape(g.name)} <span class="badge {status}">{status}</span></h1>
<p class="muted">{escape(g.description)}<br>{escape(result.report_dir.name)}</p>
{abort}
<h2>Steps</h2>
<table><thead><tr><th>#</th><th>kind</th><th>step</th><th>outcome</th><th>detail</th>
<th>operator's notes</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table>
<h2>Operator instructions</h2><ol>{steps_text}</ol>
</body></html>
"""
    path = result.report_dir / "index.html"
    atomic_write(path, page)
    summary = {
        "gameday": g.name, "exit_code": result.exit_code, "abort": result.abort,
        "steps": [
            {"index": s.index, "kind": s.kind, "name": s.name, "status": s.status,
             "detail": s.detail, "notes": s.notes,
             "run_dir": str(s.run.run_dir) if s.run else None}
            for s in result.steps
        ],
    }  # fmt: skip
    atomic_write(result.report_dir / "gameday.json", json.dumps(summary, indent=2) + "\n")
    return path
