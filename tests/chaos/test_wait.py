"""wait_until: the one way the harness and its tests wait for a condition."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from chaos import ProcessExited, WaitTimeout, wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(answers), timeout=10, interval=0.001) == "ready"


def test_a_condition_that_never_holds_times_out_with_its_message() -> None:
    with pytest.raises(WaitTimeout, match=r"the moon did not hold within 0\.05s"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message="the moon")


def test_a_set_stop_event_ends_the_wait() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(WaitTimeout, match="wait stopped before it held"):
        wait_until(lambda: False, timeout=600, stop=stop)


def test_the_exit_of_the_process_it_depends_on_ends_the_wait() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    try:
        # Not a WaitTimeout after ten minutes: ProcessExited as soon as the child is gone.
        with pytest.raises(ProcessExited, match=rf"process {child.pid} exited with code 7"):
            wait_until(lambda: False, timeout=600, process=child, message="never")
    finally:
        child.kill()
        child.wait()


def test_what_a_process_did_before_it_exited_is_still_seen(tmp_path: Path) -> None:
    done = tmp_path / "done"
    child = subprocess.Popen([sys.executable, "-c", f"open({str(done)!r}, 'w').close()"])
    child.wait()
    assert wait_until(done.exists, timeout=600, process=child) is True
