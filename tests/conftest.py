"""Shared fixtures: a registry of the built-in models (built once per session) and real workers."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

ADMIN_TOKEN = "test-admin-token"

needs_service = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None, reason="needs the [service] extra (torch)"
)


@pytest.fixture(scope="session")
def built_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in models, built for real into a session directory. Read-only by convention:
    tests that damage files use ``registry``, a private copy."""
    from target_service import Registry, build_models

    root = tmp_path_factory.mktemp("registry")
    build_models(Registry(root))
    return root


@pytest.fixture
def registry(built_registry: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(built_registry, copy)
    return copy


class Workers:
    """Starts real worker processes and stops every one of them (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[Any, IO[Any]]] = []

    def start(
        self,
        registry: Path,
        model: str = "primary:v1",
        *args: str,
        hooks: bool = True,
        token: str | None = ADMIN_TOKEN,
        ready: bool = True,
    ) -> Any:
        from target_service import WorkerProcess

        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop_all
            mode="w+", prefix="worker-", suffix=".log", dir=self.log_dir, delete=False
        )
        extra = ["--threads", "1", *args]
        if hooks:
            extra.append("--fault-hooks")
        env = {"ICHAOS_ADMIN_TOKEN": token or ""}
        worker = WorkerProcess(model, registry, extra_args=extra, env=env, stderr=log)
        self.started.append((worker, log))
        if ready:
            worker.wait_ready(timeout=120)
        else:
            worker.wait_for("listening", timeout=60)
        return worker

    def stop_all(self) -> None:
        for worker, log in self.started:
            worker.stop()
            log.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture(scope="module")
def module_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pool = Workers(tmp_path_factory.mktemp("workers"))
    yield pool
    pool.stop_all()
