"""What the benchmarks share: a loopback server in its own process, the harness's percentile,
and a description of the machine (with how busy it was) to write beside every figure."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chaos import nearest_rank


def machine() -> dict[str, object]:
    """The machine, and its load when the figures were taken: a result measured on a busy
    machine says so."""
    load1, load5, _ = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load1, 2),
        "load_avg_5m": round(load5, 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@contextmanager
def server_process(script: Path, *args: str) -> Iterator[str]:
    """``script`` started with ``args``; it prints its port on its first line. Yields its URL
    and stops it on the way out."""
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def percentile(values: list[float], q: float) -> float:
    """The harness's own nearest-rank percentile (NaN, not 0, when there is nothing)."""
    return nearest_rank(values, q) if values else float("nan")
