"""Starting and stopping the stack: no process left behind, bad stack files refused up front."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos import wait_until
from target_service._supervisor import pid_alive
from tests.conftest import ADMIN_TOKEN, needs_service
from tests.target_service.test_stack import Stack

pytestmark = [pytest.mark.slow, needs_service]

SMALL = """
pools:
  primary: {model: fallback:v1, replicas: 1}
  canary: {model: canary:v2, replicas: 0}
  fallback: {model: fallback:v1, replicas: 1}
"""


def pids(state: dict[str, Any]) -> list[int]:
    children = [state["gateway"], state["standby"], *state["workers"]]
    return [state["supervisor"]["pid"], *(int(c["pid"]) for c in children)]


def stack_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "target_service", "stack", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_stack_down_leaves_no_process_behind(tmp_path: Path, built_registry: Path) -> None:
    stack = Stack(tmp_path, built_registry, SMALL)
    try:
        everything = pids(stack.state())
        assert all(pid_alive(p) for p in everything)
        done = stack_cli("down", "--state", str(stack.state_path))
        assert done.returncode == 0, done.stderr
        assert "supervisor" in done.stdout
        wait_until(lambda: not any(pid_alive(p) for p in everything), timeout=30,
                   message="every stack process gone")  # fmt: skip
        assert not stack.state_path.exists()
    finally:
        stack.stop()


def test_a_killed_supervisor_takes_its_children_with_it(
    tmp_path: Path, built_registry: Path
) -> None:
    stack = Stack(tmp_path, built_registry, SMALL)
    try:
        state = stack.state()
        os.kill(state["supervisor"]["pid"], signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in pids(state)), timeout=30,
                   message="children ended with their supervisor")  # fmt: skip
        # The stale state file does not block the next start, and `down` cleans it up.
        assert stack_cli("status", "--state", str(stack.state_path)).returncode == 1
        assert stack_cli("down", "--state", str(stack.state_path)).returncode == 0
        assert not stack.state_path.exists()
    finally:
        stack.stop()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("pools: {primary: {model: primary:v1, replicas: 2, colour: red}}", "pools.primary.colour"),
        ("gateway: {deadline: 2}", "a duration needs a unit"),
        ("gateway: {deadline: soon}", "invalid duration 'soon'"),
        ("pools: {primary: {model: primary, replicas: 1}}", "MODEL:VERSION"),
        ("pools: {primary: {model: primary:v1, replicas: 0}}", "at least one replica"),
        ("pools: {primary: {model: primary:v1, replicas: 1, addresses: [nowhere]}}", "HOST:PORT"),
        ("pools: [", "invalid YAML"),
    ],
)
def test_bad_stack_files_are_refused_before_anything_starts(
    tmp_path: Path, content: str, message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    state = tmp_path / "state.json"
    done = stack_cli("up", "--config", str(config), "--state", str(state),
                     env={"ICHAOS_ADMIN_TOKEN": ADMIN_TOKEN})  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert f"{config}:1" in done.stderr  # file and line
    assert "Traceback" not in done.stderr
    assert not state.exists()


def test_unknown_model_and_missing_token_are_refused(tmp_path: Path, built_registry: Path) -> None:
    config = tmp_path / "stack.yaml"
    config.write_text("pools: {primary: {model: nosuch:v1, replicas: 1}}")
    state = str(tmp_path / "s.json")
    done = stack_cli("up", "--config", str(config), "--registry", str(built_registry),
                     "--state", state, env={"ICHAOS_ADMIN_TOKEN": ADMIN_TOKEN})  # fmt: skip
    assert done.returncode == 2
    assert "nosuch:v1: not in the registry" in done.stderr
    config.write_text(SMALL)
    env = {k: v for k, v in os.environ.items() if k != "ICHAOS_ADMIN_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "target_service", "stack", "up", "--config", str(config),
         "--registry", str(built_registry), "--state", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "set $ICHAOS_ADMIN_TOKEN" in done.stderr


def test_status_and_down_without_a_stack_say_so(tmp_path: Path) -> None:
    state = str(tmp_path / "none.json")
    status = stack_cli("status", "--state", state)
    assert status.returncode == 2
    assert "no stack is running" in status.stderr
