"""The ./dev setup path: idempotent re-runs, and a clear stop when toxiproxy cannot be had."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)


def dev(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(ROOT / "dev"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.mark.slow
def test_setup_twice_skips_what_is_there(built_registry: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(built_registry, registry)
    bin_dir = tmp_path / "bin"
    server = shutil.which("toxiproxy-server")
    if server is None and shutil.which("go") is None:
        pytest.skip("needs Go or toxiproxy-server")
    env = {**os.environ, "ICHAOS_VENV": str(VENV), "ICHAOS_REGISTRY": str(registry)}
    if server is not None:
        # Reuse the toxiproxy the suite already has rather than building it again.
        bin_dir.mkdir()
        for name in ("toxiproxy-server", "toxiproxy-cli"):
            found = shutil.which(name)
            assert found is not None
            shutil.copy2(found, bin_dir / name)
        (bin_dir / "toxiproxy.version").write_text("v2.12.0\n")
    env["ICHAOS_BIN_DIR"] = str(bin_dir)
    first = dev("setup", env=env)  # may build toxiproxy when the suite has none on PATH
    assert first.returncode == 0, first.stderr
    again = dev("setup", env=env)
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr
    assert "building toxiproxy" not in again.stderr
    assert "primary:v1: intact, kept" in again.stdout
    assert (bin_dir / "toxiproxy-server").is_file()


def test_setup_without_go_or_toxiproxy_says_what_to_install(tmp_path: Path) -> None:
    # A PATH with the basic tools but neither Go nor toxiproxy-server on it.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("sha256sum", "cut", "cat", "mkdir", "dirname", "sed", "mktemp"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    env = {
        "PATH": str(tools),
        "HOME": str(tmp_path),
        "ICHAOS_VENV": str(VENV),
        "ICHAOS_BIN_DIR": str(tmp_path / "bin"),
    }
    done = dev("setup", env=env)
    assert done.returncode == 2
    assert "install Go" in done.stderr
    assert "toxiproxy-server on PATH" in done.stderr
    assert not (tmp_path / "bin" / "toxiproxy-server").exists()


def test_unknown_dev_command_is_refused() -> None:
    done = dev("deploy", env=dict(os.environ))
    assert done.returncode == 2
    assert "unknown command: deploy" in done.stderr
