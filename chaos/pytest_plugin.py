"""The pytest plugin (entry point ``pytest11``): scenario files as test items, fixtures for
experiments written in Python, and the run reports in pytest's own output.

- Every ``*.yaml``/``*.yml`` file directly in a directory named ``scenarios`` (or matched by the
  ``chaos_scenarios`` ini globs) is collected as one test, marked ``chaos``: ``pytest
  scenarios/`` runs the suite, ``pytest scenarios/worker-kill.yaml`` one scenario. A file that
  is not a scenario (no ``load:``) is left alone; an invalid scenario fails with its errors.
- Options ``--chaos-backend``, ``--chaos-url``, ``--chaos-report DIR``, ``--chaos-seed`` (ini
  ``chaos_backend``, ``chaos_url``, ``chaos_report``, ``chaos_seed``), declared once with
  ``ichaos run``'s in ``_options``; the header line shows the effective ones, and JUnit XML
  carries each scenario's status, report and expectations as properties.
- Fixtures: ``run_scenario`` (run a file or a scenario mapping, get the ``RunResult``),
  ``chaos_stack`` (the session's target behind Toxiproxy: the reference stack, local or in
  containers, or ``--chaos-url``; started once per session),
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

from ._errors import OptionError, ScenarioError
from ._loadgen import LoadGenerator, LoadResult, RequestSpec, frozen_heap
from ._loading import load_scenario
from ._options import OPTIONS, add_pytest_options, settings_values
from ._recording import recorders
from ._runner import Runner, RunResult, RunSettings
from ._scenario import Backend
from ._shapes import Constant, schedule
from ._toxiproxy import ToxiproxyClient
from .backends import LocalTarget, Target, UrlTarget, repair

_RESULTS = pytest.StashKey[list[RunResult]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos", "ichaos chaos experiments")
    add_pytest_options(group, parser)  # the same settings as `ichaos run`'s, declared once
    parser.addini(
        "chaos_scenarios", "extra globs of scenario files to collect", type="linelist", default=[]
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: an end-to-end chaos experiment (ichaos)")
    config.stash[_RESULTS] = []


def settings(config: pytest.Config) -> RunSettings:
    """The effective settings: command line first, then ini, then the defaults. A bad value
    is a usage error that names what it accepts, never a bare ValueError."""
    flags = {o.field: config.getoption(f"--chaos-{o.plugin_name}") for o in OPTIONS}
    ini = {o.ini: str(config.getini(o.ini)) for o in OPTIONS}
    try:
        values = settings_values(flags, ini)
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    report = Path(values.pop("report_dir", "reports"))
    values["report_dir"] = report if report.is_absolute() else config.rootpath / report
    if "url" in values and "backend" not in values:
        values["backend"] = Backend.URL  # a URL alone means the url backend, as in `ichaos run`
    return RunSettings(**values)


def pytest_report_header(config: pytest.Config) -> str:
    s = settings(config)
    backend = s.backend.value if s.backend else "per scenario"
    seed = "per scenario" if s.seed is None else str(s.seed)
    url = f", url={s.url}" if s.url else ""
    return f"ichaos: backend={backend}{url}, seed={seed}, reports={s.report_dir}"


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
        self.user_properties.extend(properties(result))
        if not result.passed:
            raise ScenarioFailed(summary(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"


def properties(result: RunResult) -> list[tuple[str, str]]:
    """What JUnit XML carries of a run, as the test case's properties: its status, report,
    and each expectation as judged (``expect[0]``: ``met: … (measured …, 192 requests)``)."""
    v = result.verdict
    found = [("ichaos.status", v.status.value), ("ichaos.run_dir", str(result.run_dir)),
             ("ichaos.report", str(result.report or ""))]  # fmt: skip
    for index, outcome in enumerate(v.expectations):
        value = "—" if outcome.measured is None else f"{outcome.measured:.4g}"
        found.append((f"ichaos.expect[{index}]", f"{outcome.judgement.value}: "
                      f"{outcome.description} (measured {value}, {outcome.evidence})"))  # fmt: skip
    return found


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
        request.node.user_properties.extend(properties(result))
        return result

    return run


@pytest.fixture(scope="session")
def chaos_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The session's target, once per session, behind the project's Toxiproxy: the reference
    stack as processes (the default) or containers (``--chaos-backend docker``), or the
    service at ``--chaos-url`` (``--chaos-backend url``; it must answer ``/healthz``)."""
    s = settings(request.config)
    run_dir = tmp_path_factory.mktemp("chaos-stack")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in repair():  # an earlier, killed session's leftovers, undone first
        if reporter is not None:
            reporter.write_line(f"ichaos repair: {line}")
    target: Target
    if s.backend is Backend.URL:
        if s.url is None:
            raise pytest.UsageError("--chaos-backend url needs the service: --chaos-url URL")
        target = UrlTarget(s.url, run_dir)
    elif s.backend is Backend.DOCKER:
        from .backends.docker import DockerTarget

        target = DockerTarget(None, run_dir, log=run_dir / "stack.log")
    else:
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
        host = {"Host": chaos_stack.host_header} if chaos_stack.host_header else {}
        generator = LoadGenerator(
            chaos_stack.url, schedule(Constant(rate), seconds), lambda _i: spec, headers=host,
            server_hostname=chaos_stack.server_hostname,
        )  # fmt: skip
        with frozen_heap():
            return asyncio.run(generator.run())

    return drive
