"""Starting a worker as a child process and following its lifecycle announcements."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ._errors import ServiceError


class WorkerProcessError(ServiceError):
    """A worker process did not reach the state it was expected to reach."""


class WorkerProcess:
    """A ``python -m target_service worker`` child; stdout JSON lines become events."""

    def __init__(
        self,
        model: str,
        registry: Path,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        stderr: IO[Any] | int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """``command`` replaces the worker command line with another program that announces
        ``listening``/``ready`` the same way (benchmarks use it for a peer server)."""
        args = list(command) if command is not None else [
            sys.executable, "-m", "target_service", "worker",
            "--model", model, "--registry", str(registry), "--port", "0", *extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, **(env or {})},
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True, name="worker-stdout")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.events.put(event)

    @property
    def url(self) -> str:
        if self.port is None:
            raise WorkerProcessError("the worker has not announced its port yet")
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, *names: str, timeout: float) -> dict[str, Any]:
        """Block until the worker announces one of ``names``; fail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerProcessError(f"worker announced none of {names} within {timeout:.0f}s")
            try:
                event = self.events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise WorkerProcessError(
                        f"worker exited with code {self.proc.returncode} before {names}"
                    ) from None
                continue
            if event.get("event") == "listening":
                self.port = int(event["port"])
            if event.get("event") in names:
                return event

    def wait_ready(self, timeout: float = 120.0) -> dict[str, Any]:
        event = self.wait_for("ready", "load_refused", timeout=timeout)
        if event["event"] == "load_refused":
            raise WorkerProcessError(f"worker refused to load its model: {event['error']}")
        return event

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class StackProcess:
    """``python -m target_service stack up`` as a child: waits for ``stack_ready``."""

    def __init__(
        self,
        config: Path | None,
        state: Path,
        registry: Path,
        *,
        env: dict[str, str] | None = None,
        stderr: IO[Any] | int | None = None,
        timeout: float = 300.0,
        on_started: Callable[[int], None] | None = None,
    ) -> None:
        """``on_started`` gets the supervisor's pid as soon as it exists, before the wait for
        ``stack_ready`` (which loads every model): a caller can record it in a lease first."""
        command = [sys.executable, "-m", "target_service", "stack", "up", "--state", str(state),
                   "--registry", str(registry)]  # fmt: skip
        if config is not None:
            command += ["--config", str(config)]
        self.state_path = state
        self.process = WorkerProcess("", registry, env=env, stderr=stderr, command=command)
        try:
            if on_started is not None:
                on_started(self.process.proc.pid)
            ready = self.process.wait_for("stack_ready", timeout=timeout)
        except BaseException:
            # Whatever ends the wait (a timeout, an exit, an interrupt raised by a signal
            # handler): the supervisor and with it every worker it started are stopped.
            self.process.stop()
            raise
        self.url = str(ready["gateway"])

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
        return data

    def worker(self, pool: str, index: int) -> dict[str, Any]:
        for worker in self.state()["workers"]:
            if (worker["pool"], worker["index"]) == (pool, index):
                return dict(worker)
        raise WorkerProcessError(f"the stack has no {pool} replica {index}")

    def stop(self, timeout: float = 20.0) -> int:
        return self.process.stop(timeout)

    def __enter__(self) -> StackProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
