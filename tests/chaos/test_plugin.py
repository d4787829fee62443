"""The pytest plugin, black-box: pytest run in a subprocess on a project made by ``pytester``,
against a real loopback service through the url backend (the real toxiproxy-server in front)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.chaos._service import Service
from tests.conftest import needs_service

pytest_plugins = ["pytester"]


@pytest.fixture
def project(
    pytester: pytest.Pytester, served: tuple[str, Service], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[pytest.Pytester, str, Service]]:
    url, service = served
    service.failing = False
    monkeypatch.setenv("ICHAOS_STATE_DIR", str(pytester.path / ".state"))
    monkeypatch.setenv("ICHAOS_TOXIPROXY_URL", "http://127.0.0.1:9")  # start a private one
    (pytester.path / "scenarios").mkdir()
    yield pytester, url, service
    service.failing = False


def scenario(url: str, name: str = "steady", expect: str = "") -> str:
    return textwrap.dedent(f"""\
        name: {name}
        description: two seconds of traffic at a loopback service
        backend: url
        url: {url}
        load: {{rate: 20/s, duration: 2s}}
        expect:
          - {{kind: status, status: 2xx, min_share: 1.0}}
        {expect}""")


def test_scenario_files_are_collected_marked_and_reported(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    (pytester.path / "scenarios" / "steady.yaml").write_text(scenario(url))
    (pytester.path / "scenarios" / "notes.yaml").write_text("owner: sre\n")  # not a scenario
    result = pytester.runpytest_subprocess("scenarios", "-v", "--chaos-report", "out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "ichaos: backend=per scenario, seed=per scenario, reports=*out",
        "scenarios/steady.yaml::steady PASSED*",
        "*ichaos reports*",
        "PASSED   steady * *out/*-steady/index.html",
        "index: *out/index.html",
    ])  # fmt: skip
    assert (pytester.path / "out" / "index.html").is_file()
    assert pytester.runpytest_subprocess("scenarios", "-m", "not chaos").ret == 5
    pytester.runpytest_subprocess("scenarios/steady.yaml", "-m", "chaos").assert_outcomes(passed=1)


def test_a_failing_scenario_shows_what_was_not_met(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, service = project
    service.failing = True
    (pytester.path / "scenarios" / "steady.yaml").write_text(scenario(url))
    result = pytester.runpytest_subprocess("scenarios", "--chaos-report", "out")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "steady: FAILED (exit code 1)",
        "  ✗ 2xx share of all requests ≥ 100.0%: not met, measured 0 (40 requests)",
        "  report: *out/*-steady/index.html",
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()


def test_an_invalid_scenario_fails_with_file_line_and_field(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    text = scenario(url).replace("duration: 2s", "duration: forever")
    (pytester.path / "scenarios" / "broken.yaml").write_text(text)
    result = pytester.runpytest_subprocess("scenarios")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*broken.yaml:5: load.duration: invalid duration 'forever'*"])


def test_ini_defaults_and_command_line_options(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    pytester.makeini("[pytest]\nchaos_seed = 11\nchaos_report = runs\n")
    (pytester.path / "scenarios" / "steady.yaml").write_text(scenario(url))
    result = pytester.runpytest_subprocess("scenarios")
    result.stdout.fnmatch_lines(["ichaos: backend=per scenario, seed=11, reports=*runs"])
    verdicts = list((pytester.path / "runs").glob("*/verdict.json"))
    assert len(verdicts) == 1 and '"seed": 11' in verdicts[0].read_text()
    result = pytester.runpytest_subprocess("scenarios", "--chaos-seed", "12")
    result.stdout.fnmatch_lines(["ichaos: backend=per scenario, seed=12, reports=*runs"])


def test_run_scenario_fixture_runs_a_mapping_from_python(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    pytester.makepyfile(
        test_experiment=f"""
        import pytest

        @pytest.mark.chaos
        def test_steady(run_scenario):
            result = run_scenario({{
                "name": "from-python", "backend": "url", "url": "{url}",
                "load": {{"rate": "20/s", "duration": "1s"}},
                "expect": [{{"kind": "status", "status": "2xx", "min_share": 1.0}}],
            }})
            assert result.passed, result.verdict
            assert result.verdict.requests.total == 20
            assert result.report.name == "index.html"
        """
    )
    result = pytester.runpytest_subprocess("-m", "chaos", "--chaos-report", "out")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["PASSED   from-python *"])
    assert not list(Path(pytester.path).glob("*.yaml"))  # the temporary file is gone


def test_a_misspelt_run_scenario_setting_is_an_error_not_ignored(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    pytester.makepyfile(
        test_experiment=f"""
        import pytest

        def test_typo(run_scenario):
            with pytest.raises(TypeError, match=r"unknown settings \\['sed'\\]; RunSettings has"):
                run_scenario({{"name": "typo", "backend": "url", "url": "{url}",
                               "load": {{"rate": "20/s", "duration": "1s"}}}}, sed=3)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("ini", "said"),
    [
        ("chaos_backend = kubernetes", "chaos_backend = 'kubernetes': expected one of local, "),
        ("chaos_seed = three", "chaos_seed = 'three': expected an integer"),
    ],
)
def test_a_bad_ini_value_is_a_usage_error_naming_what_is_valid(
    project: tuple[pytest.Pytester, str, Service], ini: str, said: str
) -> None:
    pytester, _, _ = project
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert said in result.stderr.str() and "Traceback" not in result.stderr.str()


@needs_service
@pytest.mark.chaos
def test_stack_toxiproxy_and_load_fixtures_drive_the_real_stack(
    project: tuple[pytest.Pytester, str, Service],
    built_registry: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester, _, _ = project
    monkeypatch.setenv("ICHAOS_REGISTRY", str(built_registry))
    pytester.makepyfile(
        test_experiment="""
        from chaos import Stream, Toxic, ToxicType

        def test_latency_on_the_client_hop(chaos_stack, chaos_toxiproxy, chaos_load):
            before = chaos_load(10, 1.0)
            assert [r.status for r in before.records] == [200] * 10
            slow = Toxic(name="slow", type=ToxicType.LATENCY, stream=Stream.DOWNSTREAM,
                         attributes={"latency": 400})
            chaos_toxiproxy.add_toxic(chaos_stack.hops["client"], slow)
            after = chaos_load(10, 1.0)
            assert all(r.status == 200 and r.latency_s >= 0.4 for r in after.records)

        def test_toxics_are_gone_for_the_next_test(chaos_stack, chaos_toxiproxy):
            assert chaos_toxiproxy.toxics(chaos_stack.hops["client"]) == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_fixtures_honour_chaos_url_and_the_header_says_so(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    pytester.makepyfile(
        test_by_url="""
        def test_the_session_target_is_the_url(chaos_stack, chaos_toxiproxy, chaos_load):
            assert chaos_stack.describe()["backend"] == "url"
            assert list(chaos_stack.hops) == ["client"]
            result = chaos_load(10, 1.0)
            assert [r.status for r in result.records] == [200] * 10
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--chaos-url", url, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"ichaos: backend=url, url={url}, seed=per scenario, reports=*"])


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--chaos-backend", "k8s"], "--chaos-backend = 'k8s': expected one of local, "),
        (["--chaos-seed", "x"], "--chaos-seed = 'x': expected an integer"),
        (["--chaos-url", "file:///etc/passwd"], "is not an http(s) URL with a host"),
    ],
)
def test_a_bad_option_is_a_usage_error_naming_what_is_valid(
    project: tuple[pytest.Pytester, str, Service], args: list[str], said: str
) -> None:
    pytester, _, _ = project
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert said in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_junit_xml_carries_each_scenarios_status_report_and_expectations(
    project: tuple[pytest.Pytester, str, Service],
) -> None:
    pytester, url, _ = project
    (pytester.path / "scenarios" / "steady.yaml").write_text(scenario(url))
    pytester.runpytest_subprocess(
        "scenarios", "--chaos-report", "out", "--junitxml", "junit.xml"
    ).assert_outcomes(passed=1)
    case = ElementTree.parse(pytester.path / "junit.xml").getroot().find(".//testcase")
    assert case is not None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["ichaos.status"] == "passed"
    assert str(props["ichaos.report"]).endswith("-steady/index.html")
    assert Path(str(props["ichaos.report"])).is_file()
    assert props["ichaos.expect[0]"] == (
        "met: 2xx share of all requests ≥ 100.0% (measured 1, 40 requests)"
    )


def test_the_cli_and_the_plugin_take_the_same_settings() -> None:
    from chaos._options import OPTIONS
    from chaos.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    flags = {a.dest: a.option_strings for a in run._actions}
    for option in OPTIONS:
        assert flags[option.field] == [f"--{option.cli_name}"]
        assert option.ini == f"chaos_{option.plugin_name.replace('-', '_')}"
