"""The public surface: ``__all__`` is exactly what ``slo`` exports, and ``slo`` stays pure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import slo


def test_all_matches_the_public_names() -> None:
    # pytest's assertion rewriting adds "@py_builtins" to modules of a distribution that ships a
    # pytest plugin (ours does): not Python names, so not the package's.
    exported = {n for n in vars(slo) if n.isidentifier() and not n.startswith("_")}
    assert set(slo.__all__) == exported
    assert len(slo.__all__) == len(set(slo.__all__))


def test_every_name_in_all_exists() -> None:
    for name in slo.__all__:
        assert getattr(slo, name) is not None


def test_importing_slo_pulls_in_no_web_test_or_ml_framework() -> None:
    forbidden = ["fastapi", "starlette", "httpx", "pytest", "torch", "transformers", "numpy"]
    code = (
        "import sys, slo, slo._parse, slo._compute;"
        f"print(','.join(sorted(m for m in {forbidden!r} if m in sys.modules)))"
    )
    root = Path(slo.__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == ""


def test_errors_form_one_tree() -> None:
    assert issubclass(slo.SLOFileError, slo.SLOError)
    assert issubclass(slo.EvaluationError, slo.SLOError)
    assert issubclass(slo.EvaluationError, ValueError)
