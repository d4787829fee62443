"""The ichaos command line: version, and the models commands it hands to the service."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import chaos

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
