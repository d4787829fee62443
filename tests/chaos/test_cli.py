"""The ichaos command line: version, and the models commands it hands to the service."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chaos
from tests.conftest import needs_service

ICHAOS = [sys.executable, "-c", "import sys; from chaos.cli import main; sys.exit(main())"]


def ichaos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ICHAOS, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_console_script_is_installed() -> None:
    assert shutil.which("ichaos", path=str(Path(sys.executable).parent)) is not None


def test_version() -> None:
    done = ichaos("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"ichaos {chaos.__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    done = ichaos("explode")
    assert done.returncode == 2
    assert "invalid choice: 'explode'" in done.stderr


@pytest.mark.slow
def test_models_commands_reach_the_service(built_registry: Path) -> None:
    listed = ichaos("models", "list", "--registry", str(built_registry))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["canary:v2", "fallback:v1", "primary:v1"]
    verify = ichaos("models", "verify", "--registry", str(built_registry), "nosuch")
    assert verify.returncode == 2
    assert "model 'nosuch': not in the registry" in verify.stderr


def test_validate_accepts_the_shipped_scenarios() -> None:
    files = sorted(str(p) for p in (Path(__file__).parents[2] / "scenarios").glob("*.yaml"))
    done = ichaos("validate", *files)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(files)
    assert all(line.startswith("ok  ") for line in done.stdout.splitlines())


def test_an_invalid_scenario_is_exit_2_with_file_line_field_and_no_traceback(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nload:\n  rate: 5/s\n  duration: forever\n", encoding="utf-8")
    for command in ("validate", "run"):
        done = ichaos(command, str(bad))
        assert done.returncode == 2
        assert f"{bad}:4: load.duration: invalid duration 'forever'" in done.stderr
        assert "Traceback" not in done.stderr


def test_run_checks_every_file_before_starting_anything(tmp_path: Path) -> None:
    good = Path(__file__).parents[2] / "scenarios" / "baseline.yaml"
    done = ichaos("run", str(good), str(tmp_path / "missing.yaml"), "--report-dir", str(tmp_path))
    assert done.returncode == 2
    assert "missing.yaml" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no run directory: nothing was started


def test_the_url_backend_without_a_url_is_a_usage_error(tmp_path: Path) -> None:
    good = Path(__file__).parents[2] / "scenarios" / "baseline.yaml"
    done = ichaos("run", str(good), "--backend", "url", "--report-dir", str(tmp_path))
    assert done.returncode == 2
    assert "--url" in done.stderr and "Traceback" not in done.stderr


def test_list_shows_each_scenario_with_duration_faults_and_description(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "scenarios"
    done = ichaos("list", str(shipped))
    assert done.returncode == 0, done.stderr
    assert "worker-kill.yaml" in done.stdout and "24s  process kill-primary @6s" in done.stdout
    assert "baseline.yaml" in done.stdout and "no fault" in done.stdout
    good = "name: g\ndescription: fine\nload: {rate: 1/s, duration: 5s}\n"
    (tmp_path / "good.yaml").write_text(good)
    (tmp_path / "bad.yaml").write_text("name: b\nload: {rate: 1/s, duration: soon}\n")
    done = ichaos("list", str(tmp_path))
    assert done.returncode == 2
    assert "bad.yaml" in done.stdout and "INVALID" in done.stdout
    assert "duration 'soon'" in done.stdout
    assert "good.yaml" in done.stdout and "fine" in done.stdout


def test_list_of_a_missing_or_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    missing = ichaos("list", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    empty = ichaos("list", str(tmp_path))
    assert empty.returncode == 2 and "no scenario file" in empty.stderr


@needs_service
def test_target_commands_reach_the_stack_supervisor(tmp_path: Path) -> None:
    done = ichaos("target", "status", "--state", str(tmp_path / "state.json"))
    assert done.returncode == 2
    assert f"no stack is running for {tmp_path / 'state.json'} (no state file)" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read"),
        ("name: [unclosed\n", "invalid YAML"),
        ("name: x\nload: {rate: 1/s, duration: 5s}\nfaults:\n  - {kind: meteor, at: 1s}\n",
         "faults[0].kind: unknown kind 'meteor'"),
        ("name: x\nload: {rate: 1/s, duration: 5 seconds}\n", "load.duration: invalid duration"),
    ],
    ids=["missing file", "invalid YAML", "unknown fault kind", "bad duration"],
)  # fmt: skip
def test_bad_scenario_files_are_explained_by_every_command_that_reads_them(
    tmp_path: Path, text: str | None, message: str
) -> None:
    path = tmp_path / "scenario.yaml"
    if text is not None:
        path.write_text(text)
    for command in (["validate"], ["run", "--report-dir", str(tmp_path / "r")]):
        done = ichaos(*command, str(path))
        assert done.returncode == 2, done.stderr
        assert str(path) in done.stderr and message in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "command", ["run", "validate", "list", "schema", "report", "gameday", "target", "models"]
)
def test_every_command_has_help(command: str) -> None:
    done = ichaos(command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
