"""The pytest plugin (entry point ``pytest11``): scenario files as test items, fixtures for
experiments written in Python, and the run reports in pytest's own output.

- Every ``*.yaml``/``*.yml`` file directly in a directory named ``scenarios`` (or matched by the
  ``chaos_scenarios`` ini globs) is collected as one test, marked ``chaos``: ``pytest
  scenarios/`` runs the suite, ``pytest scenarios/worker-kill.yaml`` one scenario. A file that
  is not a scenario (no ``load:``) is left alone; an invalid scenario fails with its errors.
- Options ``--chaos-backend``, ``--chaos-report DIR``, ``--chaos-seed`` (ini ``chaos_backend``,
  ``chaos_report``, ``chaos_seed``).
- Fixtures: ``run_scenario`` (run a file or a scenario mapping, get the ``RunResult``),
  ``chaos_stack`` (the reference stack behind Toxiproxy, started once per session),
  ``chaos_toxiproxy`` (its Toxiproxy client) and ``chaos_load`` (an open-loop load generator
  aimed at it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slo import SLOFileError, read_yaml_documents

from ._backend import LocalTarget, Target
from ._errors import ScenarioError
from ._loadgen import LoadGenerator, LoadResult, RequestSpec
from ._loading import load_scenario
from ._recording import recorders
from ._runner import Runner, RunResult, RunSettings
from ._scenario import Backend
from ._shapes import Constant, schedule
from ._toxiproxy import ToxiproxyClient

_RESULTS = pytest.StashKey[list[RunResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "ichaos chaos experiments")
    group.addoption(
        "--chaos-backend", choices=[b.value for b in Backend], default=None,
        help="run scenarios on this backend (default: each scenario's, or ini chaos_backend)",
    )  # fmt: skip
    group.addoption("--chaos-report", default=None, metavar="DIR",
                    help="where run directories and reports go (default: reports)")  # fmt: skip
    group.addoption("--chaos-seed", type=int, default=None, help="override every scenario's seed")
    group.addoption("--chaos-url", default=None, help="the service, for --chaos-backend url")
    parser.addini("chaos_backend", "default backend for scenarios", default="")
    parser.addini("chaos_report", "default report directory", default="reports")
    parser.addini("chaos_seed", "default seed override", default="")
    parser.addini(
        "chaos_scenarios", "extra globs of scenario files to collect", type="linelist", default=[]
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: an end-to-end chaos experiment (ichaos)")
    config.stash[_RESULTS] = []


def settings(config: pytest.Config) -> RunSettings:
    """The effective settings: command line first, then ini, then the defaults. A bad ini
    value is a usage error that names what it accepts, never a bare ValueError."""
    backend = config.getoption("--chaos-backend") or config.getini("chaos_backend") or None
    if backend and backend not in {b.value for b in Backend}:
        choices = ", ".join(b.value for b in Backend)
        raise pytest.UsageError(f"chaos_backend = {backend!r}: expected one of {choices}")
    seed = config.getoption("--chaos-seed")
    raw_seed = str(config.getini("chaos_seed")).strip()
    if seed is None and raw_seed:
        try:
            seed = int(raw_seed)
        except ValueError:
            raise pytest.UsageError(f"chaos_seed = {raw_seed!r}: expected an integer") from None
    report = config.getoption("--chaos-report") or config.getini("chaos_report") or "reports"
    root = config.rootpath
    report_dir = Path(report) if Path(report).is_absolute() else root / report
    return RunSettings(
        report_dir=report_dir, backend=Backend(backend) if backend else None,
        url=config.getoption("--chaos-url"), seed=seed,
    )  # fmt: skip


def pytest_report_header(config: pytest.Config) -> str:
    s = settings(config)
    backend = s.backend.value if s.backend else "per scenario"
    seed = "per scenario" if s.seed is None else str(s.seed)
    return f"ichaos: backend={backend}, seed={seed}, reports={s.report_dir}"


def _is_scenario_file(file_path: Path, config: pytest.Config) -> bool:
    if file_path.suffix not in {".yaml", ".yml"}:
        return False
    globs: list[str] = config.getini("chaos_scenarios")
    if file_path.parent.name != "scenarios" and not any(
        fnmatch.fnmatch(str(file_path), str(config.rootpath / g)) for g in globs
    ):
        return False
    try:
        documents = read_yaml_documents(file_path)
    except SLOFileError:
        return True  # looks like one by its place; its item reports why it cannot be read
    return len(documents) == 1 and isinstance(documents[0], dict) and "load" in documents[0]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if _is_scenario_file(file_path, parent.config):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        item = ScenarioItem.from_parent(self, name=self.path.stem)
        item.add_marker(pytest.mark.chaos)
        yield item


class ScenarioFailed(Exception):
    """A scenario's run did not pass: its summary is the test's failure message."""


class ScenarioItem(pytest.Item):
    def runtest(self) -> None:
        try:
            loaded = load_scenario(self.path)
        except ScenarioError as exc:
            raise ScenarioFailed(str(exc)) from None
        result = Runner(loaded, settings(self.config), observers=recorders()).run()
        self.config.stash[_RESULTS].append(result)
        if not result.passed:
            raise ScenarioFailed(summary(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"


def summary(result: RunResult) -> str:
    """What a reader of a failed CI job needs: the verdict, what was not met, where to look."""
    v = result.verdict
    lines = [f"{v.scenario}: {v.status.upper()} (exit code {v.exit_code})"]
    if v.abort:
        lines.append(f"  aborted: {v.abort.reason}")
    for error in v.harness_errors:
        lines.append(f"  harness error: {error}")
    if v.generator is not None and not v.generator.valid:
        lines.append(f"  invalid: {'; '.join(v.generator.reasons)}")
    if not v.steady_state.before_ok:
        lines.append("  steady state did not hold before the run (no load was sent)")
    if not v.steady_state.after_ok:
        lines.append("  steady state did not come back after the run")
    for outcome in v.expectations:
        if not outcome.passed:
            value = "—" if outcome.measured is None else f"{outcome.measured:.4g}"
            detail = f"; {outcome.detail}" if outcome.detail else ""
            lines.append(
                f"  ✗ {outcome.description}: {outcome.judgement}, measured {value} "
                f"({outcome.evidence}{detail})"
            )
    lines.append(f"  report: {result.report or result.run_dir}")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    terminalreporter.section("ichaos reports")
    for result in results:
        status = result.verdict.status.upper()
        terminalreporter.write_line(f"{status:8} {result.verdict.scenario:24} {result.report}")
    terminalreporter.write_line(f"index: {settings(config).report_dir / 'index.html'}")


# -- fixtures for experiments written in Python --------------------------------------------


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest) -> Callable[..., RunResult]:
    """``run_scenario(path_or_mapping, **settings)``: run a scenario with the session's
    settings (overridable per call) and return its ``RunResult``; a mapping is written to a
    temporary file first, so relative paths in it resolve from the current directory."""
    config = request.config

    def run(scenario: str | Path | dict[str, Any], **overrides: Any) -> RunResult:
        if isinstance(scenario, dict):
            with tempfile.NamedTemporaryFile(
                "w", suffix=".yaml", dir=Path.cwd(), delete=False, encoding="utf-8"
            ) as fh:
                yaml.safe_dump(scenario, fh, sort_keys=False)
            path = Path(fh.name)
            try:
                loaded = load_scenario(path)
            finally:
                path.unlink()
        else:
            loaded = load_scenario(scenario)
        known = {f.name for f in dataclasses.fields(RunSettings)}
        unknown = sorted(set(overrides) - known)
        if unknown:  # a misspelt setting must not be silently ignored
            raise TypeError(
                f"run_scenario() got unknown settings {unknown}; RunSettings has "
                f"{', '.join(sorted(known))}"
            )
        base = dataclasses.replace(settings(config), **overrides)
        result = Runner(loaded, base, observers=recorders()).run()
        config.stash[_RESULTS].append(result)
        return result

    return run


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The reference stack, as processes behind the project's Toxiproxy, once per session."""
    run_dir = tmp_path_factory.mktemp("chaos-stack")
    target = LocalTarget(None, run_dir, log=run_dir / "stack.log")
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture
def chaos_toxiproxy(chaos_stack: Target) -> Iterator[ToxiproxyClient]:
    """The stack's Toxiproxy; every toxic a test leaves is removed after it."""
    assert chaos_stack.toxiproxy is not None
    client = chaos_stack.toxiproxy
    yield client
    for name in chaos_stack.hops.values():
        for toxic in client.toxics(name):
            client.remove_toxic(name, toxic.name)
        client.update_proxy(name, enabled=True)


@pytest.fixture
def chaos_load(chaos_stack: Target) -> Callable[..., LoadResult]:
    """``chaos_load(rate, seconds, body=None, stream=False)``: open-loop load at the stack
    (through its client proxy); returns the records and the generator's health."""

    def drive(
        rate: float, seconds: float, body: dict[str, Any] | None = None, stream: bool = False
    ) -> LoadResult:
        spec = RequestSpec(body or {"prompt": "Why is the sky blue?", "max_new_tokens": 8}, stream)
        generator = LoadGenerator(
            chaos_stack.url, schedule(Constant(rate), seconds), lambda _i: spec
        )
        return asyncio.run(generator.run())

    return drive
